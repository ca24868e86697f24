-- A read-only login role for Grafana: SELECT on the four qc-stream tables and nothing else.
-- Run it with psql against the qc-stream database, after `qc-stream db upgrade`, as a role that
-- owns the tables (or a superuser). Safe to run again (it updates the password and grants):
--
--   psql "postgresql://postgres@db:5432/qc" -v grafana_password='s3cret' -f deploy/grafana/readonly-role.sql
--   psql ... -v grafana_user=qc_grafana_eu -v grafana_password='s3cret' -f ...   # another role name
--
-- Then give Grafana postgresql://qc_grafana:s3cret@db:5432/qc (QC_GRAFANA_DB_URL, or the
-- QC_GRAFANA_DB_* variables of the provisioning file).

\set ON_ERROR_STOP on

\if :{?grafana_user}
\else
  \set grafana_user qc_grafana
\endif

\if :{?grafana_password}
\else
  \warn 'set the password: psql ... -v grafana_password=SECRET -f readonly-role.sql'
  SELECT 1 / 0 AS grafana_password_not_set;
\endif

-- CREATE ROLE has no IF NOT EXISTS; \gexec runs the statement only when the role is missing.
SELECT format('CREATE ROLE %I LOGIN', :'grafana_user')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'grafana_user') \gexec

ALTER ROLE :"grafana_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
  PASSWORD :'grafana_password';
-- Belt and braces: even a mistaken grant cannot let Grafana write.
ALTER ROLE :"grafana_user" SET default_transaction_read_only = on;
ALTER ROLE :"grafana_user" SET statement_timeout = '30s';

GRANT CONNECT ON DATABASE :"DBNAME" TO :"grafana_user";
GRANT USAGE ON SCHEMA public TO :"grafana_user";
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"grafana_user";
-- Partitions of inspections are read through the parent; camera_minute / prompt_minute are the
-- per-minute roll-ups behind the panels (revision 0003).
GRANT SELECT ON TABLE inspections, defect_counts, defect_types, model_versions, camera_minute,
  prompt_minute TO :"grafana_user";

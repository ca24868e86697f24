"""Grafana dashboards as code: panel SQL (queries), dashboards (catalog), JSON rendering (model),
files (build), HTTP push (push) and a Grafana macro expander for running panel SQL without Grafana."""

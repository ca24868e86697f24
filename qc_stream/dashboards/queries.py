"""The SQL behind every dashboard panel, template variable and annotation — kept here as data.

Each query is Postgres SQL as Grafana's PostgreSQL datasource takes it: Grafana macros
(``$__timeFilter(col)``, ``$__timeGroupAlias(col, $__interval)``, ``$__timeFrom()``, ``$__timeTo()``,
``$__interval_ms``) and the multi-value template variables ``$line``, ``$product``, ``$camera``
(Grafana expands a multi-value variable to a quoted, comma-separated list, hence ``IN ($line)``).

Time columns: panels on ``defect_counts`` filter on ``bucket_start`` (the capture minute);
panels on ``inspections`` filter on ``processed_at``, which the table indexes (alone and with
line/product or camera), so a dashboard stays cheap on a large table.

"Defects" are frames with verdict warn or reject; the defect rate is defects / frames in percent.
"""

from __future__ import annotations

# --- template variables (query variables, multi-select with All) -----------------------------------

VAR_LINE = "SELECT DISTINCT line_id FROM defect_counts ORDER BY 1"

VAR_PRODUCT = "SELECT DISTINCT product FROM defect_counts WHERE line_id IN ($line) ORDER BY 1"

VAR_CAMERA = """\
SELECT DISTINCT camera_id
FROM inspections
WHERE $__timeFilter(processed_at) AND line_id IN ($line) AND product IN ($product)
ORDER BY 1"""

# --- defect trends (defect_counts) ------------------------------------------------------------------

COUNTS_FILTER = "$__timeFilter(bucket_start) AND line_id IN ($line) AND product IN ($product)"

DEFECT_TOTALS = f"""\
SELECT COALESCE(SUM(frames), 0) AS frames,
       COALESCE(SUM(warn), 0) AS warn,
       COALESCE(SUM(reject), 0) AS reject,
       ROUND(100.0 * SUM(warn + reject) / NULLIF(SUM(frames), 0), 2) AS defect_rate_pct
FROM defect_counts
WHERE {COUNTS_FILTER}"""

DEFECT_RATE_OVER_TIME = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       line_id || ' / ' || product AS metric,
       100.0 * SUM(warn + reject) / NULLIF(SUM(frames), 0) AS defect_rate_pct
FROM defect_counts
WHERE {COUNTS_FILTER}
GROUP BY 1, 2
ORDER BY 1, 2"""

DEFECT_TYPES_OVER_TIME = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       defect_type AS metric,
       SUM(warn + reject) AS defects
FROM defect_counts
WHERE {COUNTS_FILTER} AND defect_type <> ''
GROUP BY 1, 2
HAVING SUM(warn + reject) > 0
ORDER BY 1, 2"""

# --- root causes (defect_counts + defect_types) -----------------------------------------------------

# Pareto: defect types by count, largest first, with the running share of all defects.
DEFECT_PARETO = f"""\
WITH per_type AS (
  SELECT defect_type, SUM(warn + reject) AS defects
  FROM defect_counts
  WHERE {COUNTS_FILTER} AND defect_type <> ''
  GROUP BY defect_type
  HAVING SUM(warn + reject) > 0
)
SELECT defect_type,
       defects,
       ROUND(100.0 * SUM(defects) OVER (ORDER BY defects DESC, defect_type ROWS UNBOUNDED PRECEDING)
             / SUM(defects) OVER (), 1) AS cumulative_pct
FROM per_type
ORDER BY defects DESC, defect_type"""

# The registry keys names case- and spacing-insensitively (``name_key``: spaces collapsed,
# casefolded); lower() of the collapsed name matches it for the names users type.
ROOT_CAUSES = """\
SELECT c.product,
       c.defect_type,
       SUM(c.warn + c.reject) AS defects,
       SUM(c.reject) AS rejects,
       t.root_cause,
       t.corrective_action,
       t.status
FROM defect_counts c
LEFT JOIN defect_types t
  ON t.product = c.product
 AND t.name_key = lower(regexp_replace(btrim(c.defect_type), '[[:space:]]+', ' ', 'g'))
WHERE $__timeFilter(c.bucket_start) AND c.line_id IN ($line) AND c.product IN ($product)
  AND c.defect_type <> ''
GROUP BY c.product, c.defect_type, t.root_cause, t.corrective_action, t.status
HAVING SUM(c.warn + c.reject) > 0
ORDER BY defects DESC, c.product, c.defect_type"""

# --- cameras (inspections) --------------------------------------------------------------------------

INSPECTIONS_FILTER = "$__timeFilter(processed_at) AND line_id IN ($line) AND product IN ($product) AND camera_id IN ($camera)"

VERDICTS_PER_CAMERA = f"""\
SELECT camera_id,
       COUNT(*) FILTER (WHERE verdict = 'ok') AS ok,
       COUNT(*) FILTER (WHERE verdict = 'warn') AS warn,
       COUNT(*) FILTER (WHERE verdict = 'reject') AS reject
FROM inspections
WHERE {INSPECTIONS_FILTER}
GROUP BY camera_id
ORDER BY camera_id"""

RECENT_REJECTS = f"""\
SELECT processed_at AS "time",
       captured_at,
       frame_id,
       camera_id,
       line_id,
       product,
       defect_type,
       ROUND(CAST(anomaly_score AS numeric), 3) AS anomaly_score,
       ROUND(CAST(CAST(defect_probs AS json) ->> defect_type AS numeric), 3) AS defect_prob,
       CAST(defect_probs AS text) AS defect_probs,
       prompt_version
FROM inspections
WHERE verdict = 'reject' AND {INSPECTIONS_FILTER}
ORDER BY processed_at DESC, frame_id
LIMIT 100"""

# --- model / prompt versions ------------------------------------------------------------------------

# The version that decided most frames in each interval (several run side by side during a swap).
# Table format (the value is text), so the time column is a real timestamp, not epoch seconds.
ACTIVE_PROMPT_VERSION = f"""\
SELECT to_timestamp($__timeGroup(processed_at, $__interval)) AS "time",
       mode() WITHIN GROUP (ORDER BY prompt_version) AS prompt_version
FROM inspections
WHERE {INSPECTIONS_FILTER}
GROUP BY 1
ORDER BY 1"""

VERSIONS_IN_USE = """\
SELECT i.prompt_version,
       i.model_version,
       MIN(i.processed_at) AS first_seen,
       MAX(i.processed_at) AS last_seen,
       COUNT(*) AS frames,
       mv.kind,
       mv.parent_version,
       mv.created_at,
       mv.active
FROM inspections i
LEFT JOIN model_versions mv ON mv.prompt_version = i.prompt_version
WHERE $__timeFilter(i.processed_at) AND i.line_id IN ($line) AND i.product IN ($product)
  AND i.camera_id IN ($camera)
GROUP BY i.prompt_version, i.model_version, mv.kind, mv.parent_version, mv.created_at, mv.active
ORDER BY first_seen, i.prompt_version"""

# Annotation: a marker on every time-series panel where a prompt version was created.
PROMPT_VERSION_CREATED = """\
SELECT created_at AS "time",
       'prompt version ' || prompt_version || ' (' || kind || ')'
         || CASE WHEN active THEN ', active now' ELSE '' END AS text,
       kind AS tags
FROM model_versions
WHERE $__timeFilter(created_at)
ORDER BY created_at"""

# --- throughput and latency (inspections) -----------------------------------------------------------

THROUGHPUT = f"""\
SELECT $__timeGroupAlias(processed_at, $__interval),
       COUNT(*) * 60000.0 / $__interval_ms AS frames_per_min
FROM inspections
WHERE {INSPECTIONS_FILTER}
GROUP BY 1
ORDER BY 1"""

LATENCY = f"""\
SELECT $__timeGroupAlias(processed_at, $__interval),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms
FROM inspections
WHERE {INSPECTIONS_FILTER}
GROUP BY 1
ORDER BY 1"""

THROUGHPUT_SUMMARY = f"""\
SELECT COUNT(*) AS frames,
       ROUND(CAST(COUNT(*) * 60.0
             / GREATEST(EXTRACT(EPOCH FROM CAST($__timeTo() AS timestamptz) - CAST($__timeFrom() AS timestamptz)), 1)
             AS numeric), 2) AS frames_per_min,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms
FROM inspections
WHERE {INSPECTIONS_FILTER}"""

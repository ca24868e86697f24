"""The SQL behind every dashboard panel, template variable and annotation — kept here as data.

Each query is Postgres SQL as Grafana's PostgreSQL datasource takes it: Grafana macros
(``$__timeFilter(col)``, ``$__timeGroupAlias(col, $__interval)``, ``$__timeFrom()``, ``$__timeTo()``,
``$__interval_ms``) and the multi-value template variables ``$line``, ``$product``, ``$camera``
(Grafana expands a multi-value variable to a quoted, comma-separated list, hence ``IN ($line)``).

Every panel reads a roll-up, so its cost follows the number of minutes and cameras in range,
not the number of frames: ``defect_counts`` (per capture minute, line, product, defect type),
``camera_minute`` (per processing minute, line, product, camera: verdicts and a latency
histogram) and ``prompt_minute`` (per processing minute, camera, prompt version and model). The
one exception is "recent rejects", which reads the newest ``inspections`` partitions through the
partial index on rejects, with a limit. Time filters are on ``bucket_start`` (a minute); p50/p95
come from the histogram through ``qc_latency_quantile`` (``qc_stream.storage.rollups``).

"Defects" are frames with verdict warn or reject; the defect rate is defects / frames in percent.
"""

from __future__ import annotations

from qc_stream.storage.rollups import LATENCY_COLUMNS

# The latency histogram of a group of camera_minute rows, for qc_latency_quantile(counts, q).
LATENCY_COUNTS = "ARRAY[" + ", ".join(f"SUM({c})" for c in LATENCY_COLUMNS) + "]"

# --- template variables (query variables, multi-select with All) -----------------------------------

VAR_LINE = "SELECT DISTINCT line_id FROM defect_counts ORDER BY 1"

VAR_PRODUCT = "SELECT DISTINCT product FROM defect_counts WHERE line_id IN ($line) ORDER BY 1"

VAR_CAMERA = """\
SELECT DISTINCT camera_id
FROM camera_minute
WHERE $__timeFilter(bucket_start) AND line_id IN ($line) AND product IN ($product)
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

# --- cameras (camera_minute; recent rejects from inspections) ---------------------------------------

CAMERA_FILTER = "line_id IN ($line) AND product IN ($product) AND camera_id IN ($camera)"
INSPECTIONS_FILTER = f"$__timeFilter(processed_at) AND {CAMERA_FILTER}"
MINUTES_FILTER = f"$__timeFilter(bucket_start) AND {CAMERA_FILTER}"

VERDICTS_PER_CAMERA = f"""\
SELECT camera_id,
       SUM(ok) AS ok,
       SUM(warn) AS warn,
       SUM(reject) AS reject
FROM camera_minute
WHERE {MINUTES_FILTER}
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

# The version that decided most frames in each interval (several run side by side during a swap;
# a tie goes to the smallest name). Table format (the value is text), so the time column is a real
# timestamp, not epoch seconds.
ACTIVE_PROMPT_VERSION = f"""\
WITH per_version AS (
  SELECT $__timeGroup(bucket_start, $__interval) AS t, prompt_version, SUM(frames) AS frames
  FROM prompt_minute
  WHERE {MINUTES_FILTER}
  GROUP BY 1, 2
)
SELECT DISTINCT ON (t) to_timestamp(t) AS "time", prompt_version
FROM per_version
ORDER BY t, frames DESC, prompt_version"""

VERSIONS_IN_USE = """\
SELECT p.prompt_version,
       p.model_version,
       MIN(p.first_seen) AS first_seen,
       MAX(p.last_seen) AS last_seen,
       SUM(p.frames) AS frames,
       mv.kind,
       mv.parent_version,
       mv.created_at,
       mv.active
FROM prompt_minute p
LEFT JOIN model_versions mv ON mv.prompt_version = p.prompt_version
WHERE $__timeFilter(p.bucket_start) AND p.line_id IN ($line) AND p.product IN ($product)
  AND p.camera_id IN ($camera)
GROUP BY p.prompt_version, p.model_version, mv.kind, mv.parent_version, mv.created_at, mv.active
ORDER BY first_seen, p.prompt_version"""

# Annotation: a marker on every time-series panel where a prompt version was created.
PROMPT_VERSION_CREATED = """\
SELECT created_at AS "time",
       'prompt version ' || prompt_version || ' (' || kind || ')'
         || CASE WHEN active THEN ', active now' ELSE '' END AS text,
       kind AS tags
FROM model_versions
WHERE $__timeFilter(created_at)
ORDER BY created_at"""

# --- throughput and latency (camera_minute) ---------------------------------------------------------

THROUGHPUT = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       SUM(frames) * 60000.0 / $__interval_ms AS frames_per_min
FROM camera_minute
WHERE {MINUTES_FILTER}
GROUP BY 1
ORDER BY 1"""

# p50/p95 interpolated in the histogram bucket that holds them (edges in storage/rollups.py).
LATENCY = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       qc_latency_quantile({LATENCY_COUNTS}, 0.5) AS p50_ms,
       qc_latency_quantile({LATENCY_COUNTS}, 0.95) AS p95_ms
FROM camera_minute
WHERE {MINUTES_FILTER}
GROUP BY 1
ORDER BY 1"""

THROUGHPUT_SUMMARY = f"""\
SELECT COALESCE(SUM(frames), 0) AS frames,
       ROUND(CAST(COALESCE(SUM(frames), 0) * 60.0
             / GREATEST(EXTRACT(EPOCH FROM CAST($__timeTo() AS timestamptz) - CAST($__timeFrom() AS timestamptz)), 1)
             AS numeric), 2) AS frames_per_min,
       qc_latency_quantile({LATENCY_COUNTS}, 0.5) AS p50_ms,
       qc_latency_quantile({LATENCY_COUNTS}, 0.95) AS p95_ms
FROM camera_minute
WHERE {MINUTES_FILTER}"""

"""The SQL behind every dashboard panel, template variable and annotation — kept here as data.

Each query is Postgres SQL as Grafana's PostgreSQL datasource takes it: Grafana macros
(``$__timeFilter(col)``, ``$__timeGroupAlias(col, $__interval)``, ``$__timeFrom()``, ``$__timeTo()``,
``$__interval_ms``) and the multi-value template variables ``$line``, ``$product``, ``$camera``
(Grafana expands a multi-value variable to a quoted, comma-separated list, hence ``IN ($line)``).

Every panel reads roll-ups, so its cost follows the number of minutes / hours and cameras in
range, not the number of frames: ``defect_counts`` (per capture minute, line, product, defect
type), ``camera_minute`` (per processing minute, line, product, camera: verdicts and a latency
histogram), ``prompt_minute`` (per processing minute, camera, prompt version and model), and their
hour twins ``defect_counts_hour``, ``camera_hour``, ``prompt_hour``. A panel reads the whole hours
inside its range from the hour table and only the ragged ends from the minute table
(``_rollup``), so totals are exact and a 30-day range reads ~720 hour rows per camera instead of
43,200 minute rows. Time series do the same only when their interval is whole hours (else each
hour row would land in one interval); shorter intervals mean shorter ranges, read by the minute.
The one exception is "recent rejects", which reads the newest ``inspections`` partitions through
the partial index on rejects, with a limit. p50/p95 come from the histogram through
``qc_latency_quantile`` (``qc_stream.storage.rollups``).

"Defects" are frames with verdict warn or reject; the defect rate is defects / frames in percent.
"""

from __future__ import annotations

from qc_stream.storage.rollups import LATENCY_COLUMNS

# The latency histogram of a group of camera roll-up rows, for qc_latency_quantile(counts, q).
LATENCY_COUNTS = "ARRAY[" + ", ".join(f"SUM({c})" for c in LATENCY_COLUMNS) + "]"

_FROM = "CAST($__timeFrom() AS timestamptz)"
_TO = "CAST($__timeTo() AS timestamptz)"
# The whole UTC hours inside the range: [_HOURS_FROM, _HOURS_TO).
_HOURS_FROM = f"date_trunc('hour', {_FROM} + interval '1 hour' - interval '1 microsecond', 'UTC')"
_HOURS_TO = f"GREATEST(date_trunc('hour', {_TO}, 'UTC'), {_HOURS_FROM})"
_WHOLE_HOURS = "$__interval_ms % 3600000 = 0"
_NO_HOURS = f"{_TO} + interval '1 minute'"  # an empty hour span, past every minute in range


def _rollup(minute: str, hour: str, columns: str, where: str, *, series: bool) -> str:
    """A subquery over ``minute`` + ``hour`` rows in the time range, each frame counted once:
    hour rows for the whole hours inside the range, minute rows for the rest. Each part is one
    range on ``bucket_start`` (the leading key column), so each is an index range scan."""
    lo, hi = _HOURS_FROM, _HOURS_TO
    if series:
        lo = f"CASE WHEN {_WHOLE_HOURS} THEN {_HOURS_FROM} ELSE {_NO_HOURS} END"
        hi = f"CASE WHEN {_WHOLE_HOURS} THEN {_HOURS_TO} ELSE {_NO_HOURS} END"
    return f"""(
  SELECT {columns} FROM {hour}
  WHERE bucket_start >= {lo} AND bucket_start < {hi} AND {where}
  UNION ALL
  SELECT {columns} FROM {minute}
  WHERE $__timeFilter(bucket_start) AND bucket_start < {lo} AND {where}
  UNION ALL
  SELECT {columns} FROM {minute}
  WHERE $__timeFilter(bucket_start) AND bucket_start >= {hi} AND {where}
)"""


_COUNT_COLUMNS = "bucket_start, line_id, product, defect_type, frames, warn, reject"
_COUNTS_WHERE = "line_id IN ($line) AND product IN ($product)"
_CAMERA_COLUMNS = "bucket_start, camera_id, frames, ok, warn, reject, " + ", ".join(LATENCY_COLUMNS)
_PROMPT_COLUMNS = "bucket_start, prompt_version, model_version, frames, first_seen, last_seen"
CAMERA_FILTER = "line_id IN ($line) AND product IN ($product) AND camera_id IN ($camera)"
INSPECTIONS_FILTER = f"$__timeFilter(processed_at) AND {CAMERA_FILTER}"


def _counts(series: bool) -> str:
    return _rollup(
        "defect_counts", "defect_counts_hour", _COUNT_COLUMNS, _COUNTS_WHERE, series=series
    )


def _cameras(series: bool) -> str:
    return _rollup("camera_minute", "camera_hour", _CAMERA_COLUMNS, CAMERA_FILTER, series=series)


def _prompts(series: bool) -> str:
    return _rollup("prompt_minute", "prompt_hour", _PROMPT_COLUMNS, CAMERA_FILTER, series=series)


# --- template variables (query variables, multi-select with All) -----------------------------------

VAR_LINE = "SELECT DISTINCT line_id FROM defect_counts_hour ORDER BY 1"

VAR_PRODUCT = "SELECT DISTINCT product FROM defect_counts_hour WHERE line_id IN ($line) ORDER BY 1"

VAR_CAMERA = f"""\
SELECT DISTINCT camera_id
FROM {_rollup("camera_minute", "camera_hour", "bucket_start, camera_id", _COUNTS_WHERE, series=False)} AS r
ORDER BY 1"""

# --- defect trends (defect_counts) ------------------------------------------------------------------

DEFECT_TOTALS = f"""\
SELECT COALESCE(SUM(frames), 0) AS frames,
       COALESCE(SUM(warn), 0) AS warn,
       COALESCE(SUM(reject), 0) AS reject,
       ROUND(100.0 * SUM(warn + reject) / NULLIF(SUM(frames), 0), 2) AS defect_rate_pct
FROM {_counts(False)} AS c"""

DEFECT_RATE_OVER_TIME = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       line_id || ' / ' || product AS metric,
       100.0 * SUM(warn + reject) / NULLIF(SUM(frames), 0) AS defect_rate_pct
FROM {_counts(True)} AS c
GROUP BY 1, 2
ORDER BY 1, 2"""

DEFECT_TYPES_OVER_TIME = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       defect_type AS metric,
       SUM(warn + reject) AS defects
FROM {_counts(True)} AS c
WHERE defect_type <> ''
GROUP BY 1, 2
HAVING SUM(warn + reject) > 0
ORDER BY 1, 2"""

# --- root causes (defect_counts + defect_types) -----------------------------------------------------

# Pareto: defect types by count, largest first, with the running share of all defects.
DEFECT_PARETO = f"""\
WITH per_type AS (
  SELECT defect_type, SUM(warn + reject) AS defects
  FROM {_counts(False)} AS c
  WHERE defect_type <> ''
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
ROOT_CAUSES = f"""\
SELECT c.product,
       c.defect_type,
       SUM(c.warn + c.reject) AS defects,
       SUM(c.reject) AS rejects,
       t.root_cause,
       t.corrective_action,
       t.status
FROM {_counts(False)} AS c
LEFT JOIN defect_types t
  ON t.product = c.product
 AND t.name_key = lower(regexp_replace(btrim(c.defect_type), '[[:space:]]+', ' ', 'g'))
WHERE c.defect_type <> ''
GROUP BY c.product, c.defect_type, t.root_cause, t.corrective_action, t.status
HAVING SUM(c.warn + c.reject) > 0
ORDER BY defects DESC, c.product, c.defect_type"""

# --- cameras (camera roll-ups; recent rejects from inspections) -------------------------------------

VERDICTS_PER_CAMERA = f"""\
SELECT camera_id,
       SUM(ok) AS ok,
       SUM(warn) AS warn,
       SUM(reject) AS reject
FROM {_cameras(False)} AS r
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
  FROM {_prompts(True)} AS r
  GROUP BY 1, 2
)
SELECT DISTINCT ON (t) to_timestamp(t) AS "time", prompt_version
FROM per_version
ORDER BY t, frames DESC, prompt_version"""

VERSIONS_IN_USE = f"""\
SELECT p.prompt_version,
       p.model_version,
       MIN(p.first_seen) AS first_seen,
       MAX(p.last_seen) AS last_seen,
       SUM(p.frames) AS frames,
       mv.kind,
       mv.parent_version,
       mv.created_at,
       mv.active
FROM {_prompts(False)} AS p
LEFT JOIN model_versions mv ON mv.prompt_version = p.prompt_version
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

# --- throughput and latency (camera roll-ups) -------------------------------------------------------

THROUGHPUT = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       SUM(frames) * 60000.0 / $__interval_ms AS frames_per_min
FROM {_cameras(True)} AS r
GROUP BY 1
ORDER BY 1"""

# p50/p95 interpolated in the histogram bucket that holds them (edges in storage/rollups.py).
LATENCY = f"""\
SELECT $__timeGroupAlias(bucket_start, $__interval),
       qc_latency_quantile({LATENCY_COUNTS}, 0.5) AS p50_ms,
       qc_latency_quantile({LATENCY_COUNTS}, 0.95) AS p95_ms
FROM {_cameras(True)} AS r
GROUP BY 1
ORDER BY 1"""

THROUGHPUT_SUMMARY = f"""\
SELECT COALESCE(SUM(frames), 0) AS frames,
       ROUND(CAST(COALESCE(SUM(frames), 0) * 60.0
             / GREATEST(EXTRACT(EPOCH FROM {_TO} - {_FROM}), 1)
             AS numeric), 2) AS frames_per_min,
       qc_latency_quantile({LATENCY_COUNTS}, 0.5) AS p50_ms,
       qc_latency_quantile({LATENCY_COUNTS}, 0.95) AS p95_ms
FROM {_cameras(False)} AS r"""

# --- review station (reviews, retained_frames) ------------------------------------------------------

# A frame's current decision is its newest reviews row; the model's verdict/type are copied on it.
_CURRENT_REVIEWS = """\
SELECT DISTINCT ON (frame_id) *
  FROM reviews
  WHERE $__timeFilter(reviewed_at) AND line_id IN ($line) AND product IN ($product)
  ORDER BY frame_id, id DESC"""

REVIEW_AGREEMENT = f"""\
SELECT product, line_id, prompt_version,
       COUNT(*) AS reviewed,
       COUNT(*) FILTER (WHERE agrees) AS agreed,
       ROUND(100.0 * COUNT(*) FILTER (WHERE agrees) / COUNT(*), 2) AS agreement_pct
FROM ({_CURRENT_REVIEWS}) AS cur
GROUP BY product, line_id, prompt_version
ORDER BY product, line_id, prompt_version"""

REVIEW_OVERRIDES_OVER_TIME = """\
SELECT $__timeGroupAlias(reviewed_at, $__interval),
       COUNT(*) FILTER (WHERE NOT agrees) AS overrides,
       COUNT(*) FILTER (WHERE agrees) AS confirmations
FROM reviews
WHERE $__timeFilter(reviewed_at) AND line_id IN ($line) AND product IN ($product)
GROUP BY 1
ORDER BY 1"""

REVIEW_QUEUE = """\
SELECT COUNT(*) AS queue_size,
       COALESCE(ROUND(CAST(EXTRACT(EPOCH FROM now() - MIN(r.captured_at)) / 60 AS numeric), 1), 0)
         AS oldest_minutes
FROM retained_frames AS r
JOIN inspections AS i ON i.frame_id = r.frame_id
WHERE i.line_id IN ($line) AND i.product IN ($product)
  AND NOT EXISTS (SELECT 1 FROM reviews AS v WHERE v.frame_id = r.frame_id)"""

REVIEWED_DEFECT_COUNTS = f"""\
SELECT product, defect_type, SUM(raw) AS raw, SUM(reviewed) AS reviewed
FROM (
  SELECT product, original_type AS defect_type, 1 AS raw, 0 AS reviewed
    FROM ({_CURRENT_REVIEWS}) AS a WHERE original_verdict <> 'ok' AND original_type IS NOT NULL
  UNION ALL
  SELECT product, defect_type, 0, 1
    FROM ({_CURRENT_REVIEWS}) AS b WHERE verdict <> 'ok' AND defect_type IS NOT NULL
) AS counts
GROUP BY product, defect_type
ORDER BY product, defect_type"""

REVIEW_QUERIES = frozenset(
    {REVIEW_AGREEMENT, REVIEW_OVERRIDES_OVER_TIME, REVIEW_QUEUE, REVIEWED_DEFECT_COUNTS}
)

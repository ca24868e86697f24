"""Roll-up arithmetic shared by the repository, the migration, the dashboards and the tests.

Latency is kept per (minute, camera) as counts in fixed buckets so p50/p95 over any range are
sums of counts followed by one interpolation (``latency_quantile`` here, ``qc_latency_quantile``
in Postgres, created by migration 0003 with the same edges). No SQLAlchemy import: the dashboards
module reads ``LATENCY_COLUMNS`` from here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

# Lower edges (ms) of the latency buckets: bucket i holds LATENCY_EDGES[i] <= latency < edge i+1;
# the last bucket is open-ended. Fine steps where a healthy worker sits (10-300 ms).
LATENCY_EDGES: tuple[float, ...] = (
    0,
    5,
    10,
    20,
    30,
    40,
    50,
    60,
    80,
    100,
    125,
    150,
    200,
    250,
    300,
    400,
    500,
    750,
    1000,
    2000,
    5000,
)
LATENCY_COLUMNS: tuple[str, ...] = tuple(f"lat_{i:02d}" for i in range(len(LATENCY_EDGES)))


def latency_bucket(latency_ms: float) -> int:
    """The index of the bucket a latency falls in (negative values count in the first)."""
    return max(0, bisect_right(LATENCY_EDGES, latency_ms) - 1)


def latency_quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a bucketed latency histogram, interpolated linearly inside its bucket.

    The open last bucket reports its lower edge. None for an empty histogram. Mirrors
    ``qc_latency_quantile(bigint[], float8)`` in Postgres.
    """
    total = sum(counts)
    if total == 0:
        return None
    target = q * total
    cumulative = 0
    last = len(counts) - 1
    for i, n in enumerate(counts):
        if n > 0 and cumulative + n >= target:
            if i == last:
                return float(LATENCY_EDGES[i])
            lo, hi = LATENCY_EDGES[i], LATENCY_EDGES[i + 1]
            return lo + (hi - lo) * (target - cumulative) / n
        cumulative += n
    return float(LATENCY_EDGES[last])


def latency_quantile_function_sql() -> str:
    """CREATE FUNCTION for ``qc_latency_quantile``, the SQL twin of ``latency_quantile``."""
    edges = ", ".join(str(e) for e in LATENCY_EDGES)
    return f"""\
CREATE OR REPLACE FUNCTION qc_latency_quantile(counts bigint[], q double precision)
RETURNS double precision LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  edges double precision[] := ARRAY[{edges}];
  n integer := array_length(counts, 1);
  total bigint := 0;
  cumulative bigint := 0;
  target double precision;
BEGIN
  SELECT COALESCE(SUM(c), 0) INTO total FROM unnest(counts) AS c;
  IF total = 0 THEN
    RETURN NULL;
  END IF;
  target := q * total;
  FOR i IN 1..n LOOP
    IF COALESCE(counts[i], 0) > 0 AND cumulative + counts[i] >= target THEN
      IF i = n THEN
        RETURN edges[i];
      END IF;
      RETURN edges[i] + (edges[i + 1] - edges[i]) * (target - cumulative) / counts[i];
    END IF;
    cumulative := cumulative + COALESCE(counts[i], 0);
  END LOOP;
  RETURN edges[n];
END
$fn$"""


def latency_bucket_sql(column: str, i: int) -> str:
    """A SQL predicate: ``column`` falls in latency bucket i (for backfills from raw rows)."""
    conds = []
    if i > 0:
        conds.append(f"{column} >= {LATENCY_EDGES[i]}")
    if i < len(LATENCY_EDGES) - 1:
        conds.append(f"{column} < {LATENCY_EDGES[i + 1]}")
    return " AND ".join(conds)


__all__ = [
    "LATENCY_COLUMNS",
    "LATENCY_EDGES",
    "latency_bucket",
    "latency_bucket_sql",
    "latency_quantile",
    "latency_quantile_function_sql",
]

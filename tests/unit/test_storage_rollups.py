"""The latency histogram of the roll-ups: bucketing and the interpolated quantile."""

from __future__ import annotations

import pytest

from qc_stream.storage.rollups import (
    LATENCY_COLUMNS,
    LATENCY_EDGES,
    latency_bucket,
    latency_quantile,
)


def test_edges_rise_and_every_bucket_has_a_column():
    assert list(LATENCY_EDGES) == sorted(set(LATENCY_EDGES))
    assert len(LATENCY_COLUMNS) == len(LATENCY_EDGES)


@pytest.mark.parametrize(
    "ms, bucket", [(-1, 0), (0, 0), (4.99, 0), (5, 1), (99.9, 8), (100, 9), (5000, 20), (1e6, 20)]
)
def test_a_latency_falls_in_the_bucket_of_its_lower_edge(ms, bucket):
    assert latency_bucket(ms) == bucket


def test_quantiles_interpolate_inside_the_bucket():
    counts = [0] * len(LATENCY_EDGES)
    for ms in (100, 150, 200):  # buckets [100,125), [150,200), [200,250)
        counts[latency_bucket(ms)] += 1
    assert latency_quantile(counts, 0.5) == pytest.approx(175.0)
    assert latency_quantile(counts, 0.95) == pytest.approx(242.5)
    assert latency_quantile([0] * len(LATENCY_EDGES), 0.5) is None
    top = [0] * (len(LATENCY_EDGES) - 1) + [3]
    assert latency_quantile(top, 0.95) == LATENCY_EDGES[-1]  # the open bucket: its lower edge

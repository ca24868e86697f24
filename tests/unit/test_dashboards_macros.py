"""The Grafana macro expander the SQL tests rely on (qc_stream.dashboards.macros)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from qc_stream.dashboards.macros import expand, interval_seconds

FROM = datetime(2026, 1, 1, tzinfo=UTC)
TO = datetime(2026, 1, 2, tzinfo=UTC)


def _expand(sql: str, interval_s: int = 60, **variables):
    return expand(sql, time_from=FROM, time_to=TO, variables=variables, interval_s=interval_s)


def test_time_filter_and_range_become_bound_times():
    sql, params = _expand(
        "WHERE $__timeFilter(t.processed_at) AND x < $__timeTo() AND y > $__timeFrom()"
    )
    assert (
        sql
        == "WHERE t.processed_at BETWEEN :time_from AND :time_to AND x < :time_to AND y > :time_from"
    )
    assert params == {"time_from": FROM, "time_to": TO}


def test_time_group_uses_the_interval_like_grafana():
    sql, _ = _expand(
        "SELECT $__timeGroupAlias(bucket_start, $__interval), $__timeGroup(c, '5m')", interval_s=120
    )
    assert sql == (
        'SELECT floor(extract(epoch from bucket_start)/120)*120 AS "time", floor(extract(epoch from c)/300)*300'
    )
    sql, _ = _expand("$__interval_ms / $__interval", interval_s=30)
    assert sql == "30000 / 30s"


def test_multi_value_variables_become_one_parameter_per_value():
    sql, params = _expand(
        "line_id IN ($line) AND product IN (${product})", line=["L1", "L'2"], product=["p"]
    )
    assert sql == "line_id IN (:v_line_0, :v_line_1) AND product IN (:v_product_0)"
    assert params["v_line_1"] == "L'2" and params["v_product_0"] == "p"


def test_nothing_selected_matches_nothing():
    assert _expand("camera_id IN ($camera)", camera=[])[0] == "camera_id IN (NULL)"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("WHERE line IN ($lines)", r"undefined template variable \$lines"),
        ("WHERE $__unixEpochFilter(t)", "unsupported macro"),
        ("WHERE $__timeFilter(a, b)", "unsupported macro"),
        ("SELECT $__timeGroup(c, soon)", "not a Grafana interval"),
    ],
)
def test_anything_unknown_is_an_error(sql, message):
    with pytest.raises(ValueError, match=message):
        _expand(sql, line=["L1"])


@pytest.mark.parametrize(
    "text, seconds", [("1m", 60), ("'5m'", 300), ("30s", 30), ("2h", 7200), ("1d", 86400)]
)
def test_interval_seconds(text, seconds):
    assert interval_seconds(text) == seconds

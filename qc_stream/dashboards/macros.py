"""Expand Grafana's PostgreSQL macros and template variables so panel SQL runs without Grafana.

Used by the tests (every panel query runs against a migrated Postgres) and handy for trying a
panel query in psql. It mirrors what Grafana's PostgreSQL datasource sends to the database, except
that times and variable values become bound parameters instead of inlined literals:

=================================  ==============================================================
``$line``, ``${line}``             ``:v_line_0, :v_line_1, …`` — one parameter per selected value
                                   (Grafana inlines ``'a','b'``); no value selected -> ``NULL``
``$__interval_ms``                 the interval in milliseconds, e.g. ``60000``
``$__interval``                    the interval as Grafana writes it, e.g. ``60s``
``$__timeFilter(col)``             ``col BETWEEN :time_from AND :time_to``
``$__timeFrom()``, ``$__timeTo()``   ``:time_from``, ``:time_to``
``$__timeGroup(col, 5m)``          ``floor(extract(epoch from col)/300)*300`` (epoch seconds)
``$__timeGroupAlias(col, 5m)``     the same ``AS "time"``
=================================  ==============================================================

Anything else starting with ``$`` is an error, so a typo in a panel query fails the tests.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_VAR = re.compile(r"\$\{(\w+)\}|\$(?!__)([A-Za-z]\w*)")
_MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")
_INTERVAL = re.compile(r"^'?(\d+)(ms|s|m|h|d)'?$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(text: str) -> int:
    match = _INTERVAL.match(text.strip())
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r} (e.g. 1m, '5m', 30s)")
    return max(1, int(int(match.group(1)) * _UNIT_S[match.group(2)]))


def expand(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    variables: dict[str, list[str]],
    interval_s: int = 60,
) -> tuple[str, dict[str, Any]]:
    """Return ``(sql, params)`` for ``sqlalchemy.text(sql)`` with every macro and variable expanded."""
    params: dict[str, Any] = {"time_from": time_from, "time_to": time_to}

    def variable(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise ValueError(f"undefined template variable ${name}")
        values = variables[name]
        if not values:
            return "NULL"
        names = []
        for i, value in enumerate(values):
            params[f"v_{name}_{i}"] = value
            names.append(f":v_{name}_{i}")
        return ", ".join(names)

    out = _VAR.sub(variable, sql)
    out = out.replace("$__interval_ms", str(interval_s * 1000)).replace(
        "$__interval", f"{interval_s}s"
    )

    def macro(match: re.Match) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        if name == "timeFilter" and len(args) == 1:
            return f"{args[0]} BETWEEN :time_from AND :time_to"
        if name == "timeFrom" and not args:
            return ":time_from"
        if name == "timeTo" and not args:
            return ":time_to"
        if name in ("timeGroup", "timeGroupAlias") and len(args) >= 2:
            seconds = interval_seconds(args[1])
            group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        raise ValueError(f"unsupported macro ${match.group(0)[1:]}")

    out = _MACRO.sub(macro, out)
    if "$" in out:
        raise ValueError(f"unexpanded '$' left in query: {out[out.index('$') :][:40]!r}")
    return out, params

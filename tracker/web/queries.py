"""The read functions the web pages use, from the query area's selectors.

Thin adapters: column names for the column chooser, and the JSON bytes of a chart query
(numpy arrays go straight to orjson, non-finite values as "NaN"/"Infinity" strings).
"""

from __future__ import annotations

import re
from typing import Any

from ..access import Principal
from ..models import Project, Run
from ..selectors.filtering import Field, parse_column
from ..selectors.runs_table import discover_columns, runs_table
from ..selectors.series_query import dumps, query_series_arrays, series_payload

__all__ = ["chooser_columns", "column_field", "runs_table", "series_json"]

CHOOSER_AGGS = ("last", "min", "max")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w./:-]*$")


def _ref(key: str) -> str:
    """A key as the filter language writes it: bare when it can be, else in brackets."""
    return (
        key
        if _PLAIN_KEY.match(key)
        else '["' + key.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    )


def _col(prefix: str, key: str, agg: str = "") -> str:
    ref = _ref(key)
    base = f"{prefix}{ref}" if ref.startswith("[") else f"{prefix}.{ref}"
    return f"{base}.{agg}" if agg else base


def chooser_columns(principal: Principal, project: Project) -> dict[str, list[tuple[str, str]]]:
    """(column, label) pairs the runs table can show, for the column chooser."""
    found = discover_columns(project, principal=principal)
    return {
        "params": [(_col("params", k), k) for k in found["params"]],
        "metrics": [
            (_col("metrics", k, agg), f"{k} ({agg})")
            for k in found["metrics"]
            for agg in CHOOSER_AGGS
        ],
    }


def column_field(col: str) -> Field | None:
    try:
        return parse_column(col)
    except Exception:  # a malformed column from the URL: shown as missing, reported elsewhere
        return None


def series_json(
    runs: list[Run],
    keys: list[str],
    *,
    max_points: int,
    x: str,
    start: float | None,
    end: float | None,
) -> bytes:
    items = query_series_arrays(runs, keys, max_points=max_points, x=x, start=start, end=end)
    return dumps({"series": series_payload(items)})


def row_value(row: dict[str, Any], field: Field | None) -> Any:
    if field is None:
        return None
    if field.kind == "param":
        return row.get("params", {}).get(field.name)
    if field.kind == "metric":
        return row.get("metrics", {}).get(f"{field.name}.{field.agg}")
    return row.get(field.name)

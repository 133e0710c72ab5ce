"""The hparams table: every visible run's params against chosen metric aggregates.

Metrics are named "key.agg" (agg in last|min|max|count|first_step|last_step) or just "key"
(meaning its last value). Without a choice, the series TensorBoard's hparams plugin marks as
session metrics (kind=hparam) are used. Four queries whatever the number of runs.
"""

from __future__ import annotations

from typing import Any

from .. import access
from ..access import Principal
from ..models import Param, Project, Series, SeriesKind
from ..services.errors import ServiceError
from .filtering import METRIC_AGGS

MAX_RUNS = 5000
MAX_METRICS = 50


def parse_metric(text: str) -> tuple[str, str]:
    text = text.strip()
    if text.startswith("metrics."):
        text = text[len("metrics.") :]
    key, dot, agg = text.rpartition(".")
    if dot and agg in METRIC_AGGS and key:
        return key, agg
    if not 0 < len(text) <= 255:
        raise ServiceError("Metric keys are 1-255 characters.", field="metrics")
    return text, "last"


def hparams_table(
    principal: Principal,
    project: Project,
    *,
    metrics: list[str] | None = None,
    max_runs: int = MAX_RUNS,
) -> dict[str, Any]:
    runs_qs = access.visible_runs(principal, project).order_by("-created_at", "-id")
    runs = list(runs_qs.values("id", "name", "status", "tags")[: max_runs + 1])
    truncated = len(runs) > max_runs
    runs = runs[:max_runs]
    ids = [r["id"] for r in runs]

    if metrics:
        if len(metrics) > MAX_METRICS:
            raise ServiceError(f"At most {MAX_METRICS} metrics.", field="metrics")
        wanted = list(dict.fromkeys(parse_metric(m) for m in metrics if m.strip()))
    else:
        keys = (
            Series.objects.filter(run_id__in=ids, kind=SeriesKind.HPARAM)
            .order_by("key")
            .values_list("key", flat=True)
            .distinct()
            if ids
            else []
        )
        wanted = [(k, "last") for k in keys]

    params: dict[int, dict[str, Any]] = {i: {} for i in ids}
    param_keys: set[str] = set()
    if ids:
        for run_id, key, value in Param.objects.filter(run_id__in=ids).values_list(
            "run_id", "key", "value"
        ):
            params[run_id][key] = value
            param_keys.add(key)

    values: dict[int, dict[str, Any]] = {i: {} for i in ids}
    metric_keys = sorted({k for k, _ in wanted})
    if ids and metric_keys:
        cols = sorted({METRIC_AGGS[a] for _, a in wanted})
        for row in Series.objects.filter(run_id__in=ids, key__in=metric_keys).values(
            "run_id", "key", *cols
        ):
            for key, agg in wanted:
                if key == row["key"]:
                    values[row["run_id"]][f"{key}.{agg}"] = row[METRIC_AGGS[agg]]

    sorted_params = sorted(param_keys)
    distinct: dict[str, set[str]] = {k: set() for k in sorted_params}
    for i in ids:
        for k in sorted_params:
            distinct[k].add(repr(params[i].get(k)))
    labels = [f"{k}.{a}" for k, a in wanted]
    return {
        "params": sorted_params,
        "varying": [k for k in sorted_params if len(distinct[k]) > 1],
        "metrics": labels,
        "rows": [
            {
                "run": r["id"],
                "name": r["name"],
                "status": r["status"],
                "tags": r["tags"],
                "params": params[r["id"]],
                "metrics": {label: values[r["id"]].get(label) for label in labels},
            }
            for r in runs
        ],
        "truncated": truncated,
    }

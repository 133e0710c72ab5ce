"""Reading per-step media of a run: images (step slider), histograms, text, PR curves.

A tag can hold thousands of steps; like TensorBoard we return at most `limit` of them, spread
evenly over the steps and always including the first and the last, so a slider spans the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import Count, Max, Min, Model

from ..models import Histogram, Image, PRCurve, Run, TextEntry
from ..services.errors import ServiceError

KINDS: dict[str, type[Model]] = {
    "images": Image,
    "histograms": Histogram,
    "text": TextEntry,
    "pr_curves": PRCurve,
}
FIELDS: dict[str, tuple[str, ...]] = {
    "images": ("id", "step", "index", "wall_time", "width", "height", "mime", "caption", "blob_id"),
    "histograms": ("step", *Histogram.VALUE_FIELDS),
    "text": ("step", *TextEntry.VALUE_FIELDS),
    "pr_curves": ("step", *PRCurve.VALUE_FIELDS),
}


def media_tags(run: Run, kind: str) -> list[dict[str, Any]]:
    model = KINDS[kind]
    return list(
        model.objects.filter(run=run)
        .values("key")
        .annotate(count=Count("id"), first_step=Min("step"), last_step=Max("step"))
        .order_by("key")
    )


def media_entries(run: Run, kind: str, key: str, *, limit: int = 500) -> dict[str, Any]:
    """Entries of one tag in step order, evenly sampled down to `limit` steps."""
    if kind not in KINDS:
        raise ServiceError("Unknown media kind.", field="kind")
    model = KINDS[kind]
    qs = model.objects.filter(run=run, key=key)
    steps = np.array(sorted(set(qs.values_list("step", flat=True))), dtype=np.int64)
    total = len(steps)
    if total > limit:
        pick = np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))
        chosen = steps[pick].tolist()
        qs = qs.filter(step__in=chosen)
    order = ("step", "index") if kind == "images" else ("step",)
    rows = list(qs.order_by(*order).values(*FIELDS[kind]))
    if kind == "images":
        for r in rows:
            r["sha256"] = r.pop("blob_id")
    return {"key": key, "total_steps": total, "sampled": total > limit, "entries": rows}

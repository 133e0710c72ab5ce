"""Histogram and precision-recall items in the wire format of the histograms / pr-curves
endpoints. numpy is imported lazily: only callers that pass arrays need it."""

from __future__ import annotations

import math
from typing import Any

from ._values import json_float

_MIN_COUNT = 1e-7  # TensorBoard's guard against 0/0 in precision and recall


def _to_numpy(values: Any) -> Any:
    import numpy as np

    if type(values).__module__.startswith("torch") and hasattr(values, "detach"):
        values = values.detach().cpu()
        try:
            values = values.numpy()
        except TypeError:
            values = values.float().numpy()
    return np.asarray(values)


def _tensorboard_default_edges() -> Any:
    """TensorBoard's default bucket edges: ±1e-12·1.1^k up to 1e20, mirrored around 0
    (values beyond ±1e20 fall outside, as in TensorBoard)."""
    import numpy as np

    v = 1e-12
    pos = []
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    pos_arr = np.array(pos)
    return np.concatenate([-pos_arr[::-1], [0.0], pos_arr])


def histogram_item(
    key: str,
    values: Any,
    step: int,
    wall_time: float,
    bins: Any = "tensorflow",
    max_bins: int | None = None,
) -> dict[str, Any]:
    """Bucket `values` like TensorBoard does (`bucket_limits[i]` = right edge of bucket i).

    Empty leading/trailing buckets are trimmed as in torch's `make_histogram`, so the default
    exponential edges cost a handful of buckets rather than 1,500.
    """
    import numpy as np

    arr = _to_numpy(values).astype(np.float64, copy=False).reshape(-1)
    arr = arr[np.isfinite(arr)]
    num = int(arr.size)
    if num == 0:
        return {
            "key": key,
            "step": step,
            "wall_time": wall_time,
            "bucket_limits": [],
            "bucket_counts": [],
            "min": 0.0,
            "max": 0.0,
            "num": 0,
            "sum": 0.0,
            "sum_squares": 0.0,
        }
    edges = _tensorboard_default_edges() if isinstance(bins, str) and bins == "tensorflow" else bins
    counts, limits = np.histogram(arr, bins=edges)
    if max_bins is not None and len(counts) > max_bins:
        factor = math.ceil(len(counts) / max_bins)
        pad = (-len(counts)) % factor
        counts = np.pad(counts, (0, pad)).reshape(-1, factor).sum(axis=1)
        limits = np.concatenate([limits[:-1:factor], limits[-1:]])
    nonzero = np.nonzero(counts)[0]
    start, end = int(nonzero[0]), int(nonzero[-1]) + 1
    counts = counts[start:end]
    right_edges = limits[start + 1 : end + 1]
    return {
        "key": key,
        "step": step,
        "wall_time": wall_time,
        "bucket_limits": [json_float(float(x)) for x in right_edges],
        "bucket_counts": [int(c) for c in counts],
        "min": float(arr.min()),
        "max": float(arr.max()),
        "num": num,
        "sum": float(arr.sum()),
        "sum_squares": float(np.dot(arr, arr)),
    }


def pr_curve_item(
    key: str,
    labels: Any,
    predictions: Any,
    step: int,
    wall_time: float,
    num_thresholds: int = 127,
    weights: Any = None,
) -> dict[str, Any]:
    """Cumulative tp/fp/tn/fn per threshold (thresholds = linspace(0, 1, num_thresholds)),
    computed exactly as TensorBoard's pr_curve summary does."""
    import numpy as np

    num_thresholds = max(2, min(int(num_thresholds), 10_000))
    labels_arr = _to_numpy(labels).reshape(-1).astype(bool)
    preds = np.clip(_to_numpy(predictions).reshape(-1).astype(np.float64), 0.0, 1.0)
    if labels_arr.shape != preds.shape:
        raise ValueError("labels and predictions must have the same number of elements")
    w = np.ones_like(preds) if weights is None else _to_numpy(weights).reshape(-1).astype(float)
    bucket = np.floor(preds * (num_thresholds - 1)).astype(np.int64)
    tp_buckets = np.bincount(bucket, weights=w * labels_arr, minlength=num_thresholds)
    fp_buckets = np.bincount(bucket, weights=w * ~labels_arr, minlength=num_thresholds)
    tp = np.cumsum(tp_buckets[::-1])[::-1]
    fp = np.cumsum(fp_buckets[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(_MIN_COUNT, tp + fp)
    recall = tp / np.maximum(_MIN_COUNT, tp + fn)
    return pr_curve_raw_item(
        key,
        step,
        wall_time,
        tp,
        fp,
        tn,
        fn,
        precision,
        recall,
        np.linspace(0.0, 1.0, num_thresholds),
    )


def pr_curve_raw_item(
    key: str,
    step: int,
    wall_time: float,
    tp: Any,
    fp: Any,
    tn: Any,
    fn: Any,
    precision: Any,
    recall: Any,
    thresholds: Any,
) -> dict[str, Any]:
    def floats(xs: Any) -> list[Any]:
        return [json_float(float(x)) for x in xs]

    return {
        "key": key,
        "step": step,
        "wall_time": wall_time,
        "precision": floats(precision),
        "recall": floats(recall),
        "thresholds": floats(thresholds),
        "tp": floats(tp),
        "fp": floats(fp),
        "tn": floats(tn),
        "fn": floats(fn),
    }

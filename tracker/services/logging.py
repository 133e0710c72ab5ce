"""Live logging writes: metric batches, text, histograms and PR curves.

Every function validates the whole request body first and raises a ServiceError naming the
first bad field before anything is written, so a rejected batch leaves no trace. Bodies come
straight from the JSON parser (plain lists and dicts), or as bytes for a metrics batch sent as
binary columns; callers wrap the call in
`idempotency.run_once` so that a retried batch is stored once.

A run that is already finished still accepts writes: the client's journal may deliver the
last batches after `finish()` (a flaky network, `tracker sync` the next day), and refusing
them would lose data the user was told was logged. The run's status is left as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.db import transaction

from ..models import Histogram, PRCurve, Run, TextEntry
from .errors import ServiceError, TooLarge
from .metric_columns import decode_columns
from .metrics import append_points
from .runs import check_key
from .series_codec import Points

MAX_POINTS = 100_000
MAX_SERIES = 1_000
MAX_ITEMS = 1_000
MAX_TEXT_ITEMS = 10_000
MAX_TEXT_CHARS = 1_000_000
MAX_BUCKETS = 10_000
MAX_THRESHOLDS = 10_000
STEP_LIMIT = 2**63

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NUMBER_TYPES = {int, float}


def _need_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise ServiceError(f"{field} must be a list.", field=field)
    return value


def _steps_array(raw: Any, field: str) -> np.ndarray:
    steps = _need_list(raw, field)
    # One C-level pass over the element types catches floats, bools, strings and nulls.
    kinds = set(map(type, steps))
    if kinds - {int}:
        bad = next(s for s in steps if type(s) is not int)
        raise ServiceError(
            f"Steps are integers >= 0; got {bad!r} ({type(bad).__name__}).", field=field
        )
    try:
        arr = np.array(steps, dtype=np.int64)
    except OverflowError:
        raise ServiceError(f"Steps must be below 2^63 (in {field}).", field=field) from None
    return _check_steps(arr, field)


def _check_steps(arr: np.ndarray, field: str) -> np.ndarray:
    if arr.size and int(arr.min()) < 0:
        raise ServiceError(f"Steps are integers >= 0; got {int(arr.min())}.", field=field)
    return arr


def _check_walls(arr: np.ndarray, field: str) -> np.ndarray:
    if arr.size and not bool(np.isfinite(arr).all()):
        raise ServiceError("Wall times are finite numbers (seconds since epoch).", field=field)
    return arr


def _values_array(raw: Any, field: str) -> np.ndarray:
    values = _need_list(raw, field)
    kinds = set(map(type, values))
    if kinds <= _NUMBER_TYPES:
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:
            raise ServiceError(
                f"A value in {field} is too large for a float.", field=field
            ) from None
    if kinds - {int, float, str}:
        bad = next(v for v in values if type(v) not in (int, float, str))
        raise ServiceError(
            f'Values are numbers or "NaN", "Infinity", "-Infinity"; got {bad!r}.', field=field
        )
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if type(v) is str:
            f = _NONFINITE.get(v)
            if f is None:
                raise ServiceError(
                    f'Values are numbers or "NaN", "Infinity", "-Infinity"; got {v[:40]!r}.',
                    field=field,
                )
            out[i] = f
        else:
            try:
                out[i] = v
            except OverflowError:
                raise ServiceError(
                    f"A value in {field} is too large for a float.", field=field
                ) from None
    return out


def _walls_array(raw: Any, field: str, n: int, now: float) -> np.ndarray:
    if raw is None:
        return np.full(n, now, dtype=np.float64)
    walls = _need_list(raw, field)
    if set(map(type, walls)) - _NUMBER_TYPES:
        raise ServiceError("Wall times are finite numbers (seconds since epoch).", field=field)
    try:
        arr = np.array(walls, dtype=np.float64)
    except OverflowError:
        raise ServiceError("Wall times are finite numbers.", field=field) from None
    return _check_walls(arr, field)


def _add_points(
    parts: dict[str, list[Points]],
    where: str,
    key: str,
    steps: np.ndarray,
    walls: np.ndarray,
    values: np.ndarray,
) -> None:
    """Add one series of a batch; a key that comes again is concatenated in order."""
    if not (len(steps) == len(values) == len(walls)):
        raise ServiceError(
            f"{where}: steps, values and wall_times must have the same length "
            f"(got {len(steps)}, {len(values)}, {len(walls)}).",
            field=where,
        )
    parts.setdefault(key, []).append(Points(steps, walls, values))


def _by_key(parts: dict[str, list[Points]]) -> dict[str, Points]:
    return {k: Points.concat(v) for k, v in parts.items()}


def parse_metrics(body: Any) -> dict[str, Points]:
    """Validate a columnar metrics body and turn it into Points per key (nothing stored).

    Wall times may be omitted for a series (the server's clock is used then).
    """
    if not isinstance(body, Mapping):
        raise ServiceError('The body is an object {"series": [...]}.', field="series")
    series = body.get("series")
    if not isinstance(series, list):
        raise ServiceError('"series" must be a list.', field="series")
    if len(series) > MAX_SERIES:
        raise TooLarge(f"At most {MAX_SERIES} series per request.", field="series")
    now = time.time()
    parts: dict[str, list[Points]] = {}
    total = 0
    for i, item in enumerate(series):
        where = f"series[{i}]"
        if not isinstance(item, Mapping):
            raise ServiceError(f"{where} must be an object.", field=where)
        key = check_key(item.get("key"), f"{where}.key")
        steps_raw = item.get("steps")
        values_raw = item.get("values")
        n = len(steps_raw) if isinstance(steps_raw, list) else 0
        total += n
        if total > MAX_POINTS:
            raise TooLarge(f"At most {MAX_POINTS} points per request.", field="series")
        steps = _steps_array(steps_raw, f"{where}.steps")
        values = _values_array(values_raw, f"{where}.values")
        walls = _walls_array(item.get("wall_times"), f"{where}.wall_times", n, now)
        _add_points(parts, where, key, steps, walls, values)
    return _by_key(parts)


def parse_metric_columns(raw: bytes) -> dict[str, Points]:
    """The same as `parse_metrics` for a binary columns body (`metric_columns`)."""
    now = time.time()
    parts: dict[str, list[Points]] = {}
    total = 0
    for where, key, steps, values, walls in decode_columns(raw, MAX_SERIES):
        _check_steps(steps, f"{where}.steps")
        if walls is None:
            walls = np.full(len(steps), now, dtype=np.float64)
        else:
            _check_walls(walls, f"{where}.wall_times")
        _add_points(parts, where, key, steps, walls, values)
        total += len(steps)
        if total > MAX_POINTS:
            raise TooLarge(f"At most {MAX_POINTS} points per request.", field="series")
    return _by_key(parts)


def log_metrics(run: Run, body: Any) -> int:
    """Store a metrics batch — the JSON document, or the bytes of a columns body
    (`metric_columns`) — and return the number of points accepted (repeats included)."""
    if isinstance(body, bytes | bytearray):
        data = parse_metric_columns(bytes(body))
    else:
        data = parse_metrics(body)
    append_points(run, data)
    return sum(len(p) for p in data.values())


# --- items: text, histograms, PR curves --------------------------------------------------


def _items(body: Any, limit: int) -> list[Mapping[str, Any]]:
    if not isinstance(body, Mapping) or not isinstance(body.get("items"), list):
        raise ServiceError('The body is an object {"items": [...]}.', field="items")
    items = body["items"]
    if len(items) > limit:
        raise TooLarge(f"At most {limit} items per request.", field="items")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ServiceError(f"items[{i}] must be an object.", field=f"items[{i}]")
    return items


def _step(value: Any, field: str) -> int:
    if type(value) is not int or not 0 <= value < STEP_LIMIT:
        raise ServiceError(f"Steps are integers 0 <= step < 2^63; got {value!r}.", field=field)
    return value


def _wall(value: Any, field: str) -> float:
    if value is None:
        return time.time()
    if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
        raise ServiceError("Wall times are finite numbers (seconds since epoch).", field=field)
    return float(value)


def _finite(value: Any, field: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if type(value) not in _NUMBER_TYPES:
        raise ServiceError(f"{field} must be a finite number.", field=field)
    try:
        f = float(value)
    except OverflowError:
        raise ServiceError(f"{field} must be a finite number.", field=field) from None
    if not math.isfinite(f):
        raise ServiceError(f"{field} must be a finite number.", field=field)
    return f


def _finite_list(value: Any, field: str, limit: int) -> list[float]:
    seq = _need_list(value, field)
    if len(seq) > limit:
        raise TooLarge(f"{field} has at most {limit} entries.", field=field)
    return [_finite(v, f"{field}[{j}]") for j, v in enumerate(seq)]  # type: ignore[misc]


StepRow = Histogram | TextEntry | PRCurve


def upsert_steps(model: type[StepRow], rows: Sequence[StepRow], batch_size: int) -> None:
    """Store rows of a model unique per (run, key, step): a step already stored takes the new
    `VALUE_FIELDS`, the last write wins. At most one row per (run, key, step) in `rows`."""
    model.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["run", "key", "step"],
        update_fields=list(model.VALUE_FIELDS),
        batch_size=batch_size,
    )


def _dedupe_last(rows: list[Any]) -> list[Any]:
    """Keep the last row per (key, step): ON CONFLICT cannot touch one row twice."""
    by_id: dict[tuple[str, int], Any] = {}
    for row in rows:
        by_id[(row.key, row.step)] = row
    return list(by_id.values())


def log_text(run: Run, body: Any) -> int:
    rows: list[TextEntry] = []
    for i, item in enumerate(_items(body, MAX_TEXT_ITEMS)):
        where = f"items[{i}]"
        value = item.get("value")
        if not isinstance(value, str):
            raise ServiceError("Text values are strings.", field=f"{where}.value")
        if len(value) > MAX_TEXT_CHARS:
            raise TooLarge(
                f"Text values are at most {MAX_TEXT_CHARS} characters.", field=f"{where}.value"
            )
        if "\x00" in value:
            raise ServiceError("Text values cannot contain NUL characters.", field=f"{where}.value")
        rows.append(
            TextEntry(
                run=run,
                key=check_key(item.get("key"), f"{where}.key"),
                step=_step(item.get("step"), f"{where}.step"),
                wall_time=_wall(item.get("wall_time"), f"{where}.wall_time"),
                value=value,
            )
        )
    with transaction.atomic():
        upsert_steps(TextEntry, _dedupe_last(rows), batch_size=1000)
    return len(rows)


def _histogram(run: Run, item: Mapping[str, Any], where: str) -> Histogram:
    limits = _finite_list(item.get("bucket_limits"), f"{where}.bucket_limits", MAX_BUCKETS)
    counts = _finite_list(item.get("bucket_counts"), f"{where}.bucket_counts", MAX_BUCKETS)
    if len(limits) != len(counts):
        raise ServiceError(
            f"bucket_limits and bucket_counts must have the same length "
            f"(got {len(limits)} and {len(counts)}).",
            field=where,
        )
    if any(b < a for a, b in zip(limits, limits[1:], strict=False)):
        raise ServiceError("bucket_limits must be non-decreasing.", field=f"{where}.bucket_limits")
    if any(c < 0 for c in counts):
        raise ServiceError("bucket_counts cannot be negative.", field=f"{where}.bucket_counts")
    # The stats are float columns, which hold NaN/±inf (a diverged layer's sum is inf); the
    # bucket lists are JSON, which cannot, so those stay finite.
    stats = {
        name: _NONFINITE[v]
        if isinstance(v := item.get(name), str) and v in _NONFINITE
        else _finite(v, f"{where}.{name}", optional=True)
        for name in ("min", "max", "num", "sum", "sum_squares")
    }
    return Histogram(
        run=run,
        key=check_key(item.get("key"), f"{where}.key"),
        step=_step(item.get("step"), f"{where}.step"),
        wall_time=_wall(item.get("wall_time"), f"{where}.wall_time"),
        bucket_limits=limits,
        bucket_counts=counts,
        **stats,
    )


def log_histograms(run: Run, body: Any) -> int:
    rows = [_histogram(run, item, f"items[{i}]") for i, item in enumerate(_items(body, MAX_ITEMS))]
    with transaction.atomic():
        upsert_steps(Histogram, _dedupe_last(rows), batch_size=500)
    return len(rows)


PR_FIELDS = ("precision", "recall", "thresholds", "tp", "fp", "tn", "fn")


def _ratio_list(value: Any, field: str) -> list[float | None]:
    """Precision/recall: numbers, or "NaN" (0/0 at an empty threshold) stored as null.

    JSON columns cannot hold NaN, and null reads back unambiguously as "undefined here".
    """
    seq = _need_list(value, field)
    if len(seq) > MAX_THRESHOLDS:
        raise TooLarge(f"{field} has at most {MAX_THRESHOLDS} entries.", field=field)
    out: list[float | None] = []
    for j, v in enumerate(seq):
        if v is None or v == "NaN":
            out.append(None)
        else:
            out.append(_finite(v, f"{field}[{j}]"))
    return out


def _pr_curve(run: Run, item: Mapping[str, Any], where: str) -> PRCurve:
    data: dict[str, Sequence[float | None]] = {}
    for name in PR_FIELDS:
        field = f"{where}.{name}"
        if name in ("precision", "recall"):
            data[name] = _ratio_list(item.get(name), field)
        else:
            data[name] = _finite_list(item.get(name), field, MAX_THRESHOLDS)
    lengths = {len(v) for v in data.values()}
    if len(lengths) != 1:
        raise ServiceError(
            "precision, recall, thresholds, tp, fp, tn and fn must have the same length.",
            field=where,
        )
    return PRCurve(
        run=run,
        key=check_key(item.get("key"), f"{where}.key"),
        step=_step(item.get("step"), f"{where}.step"),
        wall_time=_wall(item.get("wall_time"), f"{where}.wall_time"),
        data=data,
    )


def log_pr_curves(run: Run, body: Any) -> int:
    rows = [_pr_curve(run, item, f"items[{i}]") for i, item in enumerate(_items(body, MAX_ITEMS))]
    with transaction.atomic():
        upsert_steps(PRCurve, _dedupe_last(rows), batch_size=500)
    return len(rows)

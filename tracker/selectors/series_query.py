"""Chart queries: read the chunks a range needs and downsample so that spikes survive.

Downsampling is min/max per bucket: the x range asked for is cut into equal-width buckets and
each bucket contributes the point holding its minimum and the one holding its maximum, in their
original order, so a single spike among a million points is still drawn (averaging or striding
would erase it). When the range holds no more than `max_points` points they are returned as they
are. A zoom (`start`/`end`) reads only the chunks whose step range (x=step) or wall-time range
(x=wall/relative) intersects it and re-downsamples at full resolution, so zooming in reveals
detail the overview could not show.

Non-finite values: NaN and ±inf are points like any other. ±inf wins min/max naturally; a NaN
is invisible to min/max, so when a range holds NaNs each bucket may add its first NaN as a third
point (and the bucket count drops to max_points // 3 so the budget still holds). On the wire they
are the strings "NaN", "Infinity" and "-Infinity" (JSON has no NaN).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from django.core.cache import cache
from django.db import connection
from django.db.models import Q

from ..models import Run, Series, SeriesChunk
from ..services.errors import ServiceError
from .series import decode_into

log = logging.getLogger(__name__)

X_MODES = ("step", "wall", "relative")
MIN_POINTS = 10
MAX_POINTS = 200_000
MAX_KEYS = 100
MAX_SERIES = 500
_INT64_MAX = 2**63 - 1


@dataclass
class SeriesData:
    run: int
    key: str
    x: np.ndarray
    step: np.ndarray
    value: np.ndarray
    wall: np.ndarray
    downsampled: bool
    count: int

    def as_dict(self) -> dict:
        return {
            "run": self.run,
            "key": self.key,
            "x": self.x.tolist(),
            "step": self.step.tolist(),
            "value": self.value.tolist(),
            "wall": self.wall.tolist(),
            "downsampled": self.downsampled,
            "count": self.count,
        }


def validate_range(
    max_points: int, x: str, start: float | None, end: float | None
) -> tuple[float | None, float | None]:
    if x not in X_MODES:
        raise ServiceError(f"x must be one of {', '.join(X_MODES)}.", field="x")
    if not isinstance(max_points, int) or not MIN_POINTS <= max_points <= MAX_POINTS:
        raise ServiceError(
            f"max_points must be between {MIN_POINTS} and {MAX_POINTS}; "
            "use the export endpoint for more.",
            field="max_points",
        )
    for name, v in (("from", start), ("to", end)):
        if v is not None and not math.isfinite(v):
            raise ServiceError(f"{name} must be a finite number.", field=name)
    if start is not None and end is not None and start > end:
        raise ServiceError("from must not be greater than to.", field="from")
    return start, end


def _clamp_step(v: float, up: bool) -> int:
    i = math.ceil(v) if up else math.floor(v)
    return max(-_INT64_MAX, min(_INT64_MAX, i))


def _chunk_range_q(x: str, start: float | None, end: float | None, offset: float) -> Q:
    """Chunks that can hold points in [start, end] on the chosen x axis."""
    q = Q()
    if x == "step":
        if start is not None:
            q &= Q(step_max__gte=_clamp_step(start, True))
        if end is not None:
            q &= Q(step_min__lte=_clamp_step(end, False))
    else:
        if start is not None:
            q &= Q(wall_max__gte=start + offset)
        if end is not None:
            q &= Q(wall_min__lte=end + offset)
    return q


def query_series_arrays(
    runs: Sequence[Run],
    keys: Sequence[str],
    *,
    max_points: int = 1000,
    x: str = "step",
    start: float | None = None,
    end: float | None = None,
) -> list[SeriesData]:
    """Like query_series, with numpy arrays (for the fast JSON path and for callers' maths)."""
    # Chunk metadata and chunk bytes are two queries (LOD-summarised chunks skip their bytes);
    # a live writer may replace a series' tail chunk in between. Reading again sees the new
    # chunk: a handful of attempts always suffices, as a writer replaces a chunk per batch.
    for _ in range(_ATTEMPTS - 1):
        try:
            return _query_series_arrays(runs, keys, max_points, x, start, end)
        except _ChunkReplaced:
            pass
    return _query_series_arrays(runs, keys, max_points, x, start, end)


_ATTEMPTS = 5


class _ChunkReplaced(Exception):
    """A chunk listed by the metadata query was gone when its bytes were read."""


def _query_series_arrays(
    runs: Sequence[Run],
    keys: Sequence[str],
    max_points: int,
    x: str,
    start: float | None,
    end: float | None,
) -> list[SeriesData]:
    start, end = validate_range(max_points, x, start, end)
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise ServiceError("Give at least one series key.", field="keys")
    if len(keys) > MAX_KEYS:
        raise ServiceError(f"At most {MAX_KEYS} keys.", field="keys")
    if len(runs) * len(keys) > MAX_SERIES:
        raise ServiceError(f"At most {MAX_SERIES} run/key pairs per query.", field="keys")
    run_order = {r.pk: i for i, r in enumerate(runs)}
    key_order = {k: i for i, k in enumerate(keys)}
    series = sorted(
        Series.objects.filter(run_id__in=list(run_order), key__in=keys).only(
            "id", "run_id", "key", "count", "first_wall"
        ),
        key=lambda s: (run_order[s.run_id], key_order[s.key]),
    )
    if not series:
        return []
    offsets = {s.pk: (s.first_wall or 0.0) if x == "relative" else 0.0 for s in series}
    cond = Q()
    for s in series:
        cond |= Q(series_id=s.pk) & _chunk_range_q(x, start, end, offsets[s.pk])
    metas = list(
        SeriesChunk.objects.filter(cond).order_by("series_id", "step_min").values_list(*_META)
    )
    by_series: dict[int, list[tuple]] = {s.pk: [] for s in series}
    for m in metas:
        by_series[m[1]].append(m)
    # Plan: chunks wholly inside the range of a series that will be heavily downsampled are
    # read from their level-of-detail summary; the others (and summaries not cached yet) raw.
    lod_metas: list[tuple] = []
    for s in series:
        ms = by_series[s.pk]
        if sum(m[2] for m in ms) >= LOD_FACTOR * max_points:
            lod_metas.extend(m for m in ms if _inside(m, x, start, end, offsets[s.pk]))
    lods = _cached_lods(lod_metas)
    need_data = [m[0] for m in metas if m[0] not in lods]
    data: dict[int, bytes] = {}
    if need_data:
        data = dict(SeriesChunk.objects.filter(id__in=need_data).values_list("id", "data"))
        if len(data) != len(need_data):
            raise _ChunkReplaced
    lod_ids = {m[0] for m in lod_metas}
    fresh: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    out = []
    for s in series:
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        raw_run: list[tuple[int, bytes]] = []  # consecutive raw chunks decode in one go
        hidden = 0
        for m in by_series[s.pk]:
            cid, count = m[0], m[2]
            if cid not in lod_ids:
                raw_run.append((count, data.pop(cid)))
                continue
            if raw_run:
                parts.append(_decode_chunks(raw_run))
                raw_run = []
            if cid in lods:
                part = lods[cid]
            else:
                part = fresh[cid] = _lod(*_decode_chunks([(count, data.pop(cid))]))
            hidden += count - len(part[0])
            parts.append(part)
        if raw_run:
            parts.append(_decode_chunks(raw_run))
        steps, walls, values = _concat(parts)
        out.append(
            _shape(s, steps, walls, values, x, start, end, offsets[s.pk], max_points, hidden)
        )
    if fresh:
        _store_lods(lod_metas, fresh)
    return out


def query_series(
    runs: list[Run],
    keys: list[str],
    *,
    max_points: int = 1000,
    x: str = "step",
    start: float | None = None,
    end: float | None = None,
) -> list[dict]:
    """[{"run", "key", "x", "step", "value", "wall", "downsampled", "count"}] per existing series.

    Runs must already be resolved through tracker.access. Series a run does not have are left
    out. `count` is the number of points in the range before downsampling.
    """
    return [
        d.as_dict()
        for d in query_series_arrays(runs, keys, max_points=max_points, x=x, start=start, end=end)
    ]


def _decode_chunks(chunks: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total = sum(c for c, _ in chunks)
    steps = np.empty(total, np.int64)
    walls = np.empty(total, np.float64)
    values = np.empty(total, np.float64)
    scratch = np.empty(max((c for c, _ in chunks), default=0), np.int64)
    pos = 0
    for count, data in chunks:
        n = decode_into(data, steps[pos:], walls[pos:], values[pos:], scratch)
        if n != count:
            raise ValueError("chunk count does not match its data")
        pos += n
    return steps, walls, values


def _shape(
    s: Series,
    steps: np.ndarray,
    walls: np.ndarray,
    values: np.ndarray,
    x: str,
    start: float | None,
    end: float | None,
    offset: float,
    max_points: int,
    hidden: int = 0,
) -> SeriesData:
    """Sort by x, cut to the range, downsample. `hidden`: points summarised away by LODs."""
    if x == "step":
        xs: np.ndarray = steps
    elif x == "wall":
        xs = walls
    else:
        xs = walls - offset
    if x != "step" and len(xs) > 1 and not bool(np.all(xs[1:] >= xs[:-1])):
        # Wall clocks can go backwards (restarted runs); the chart's x must not.
        order = np.argsort(xs, kind="stable")
        xs, steps, walls, values = xs[order], steps[order], walls[order], values[order]
    if start is not None or end is not None:
        lo = 0 if start is None else int(np.searchsorted(xs, start, side="left"))
        hi = len(xs) if end is None else int(np.searchsorted(xs, end, side="right"))
        xs, steps, walls, values = xs[lo:hi], steps[lo:hi], walls[lo:hi], values[lo:hi]
    count = len(xs) + hidden
    downsampled = count > max_points
    if len(xs) > max_points:
        idx = minmax_indices(xs, values, max_points)
        xs, steps, walls, values = xs[idx], steps[idx], walls[idx], values[idx]
    return SeriesData(s.run_id, s.key, xs, steps, values, walls, downsampled, count)


def _first_per_bucket(mask_idx: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return mask_idx[np.searchsorted(mask_idx, starts)]


def _arg_per_bucket(
    v: np.ndarray, starts: np.ndarray, sizes: np.ndarray, use_max: bool
) -> np.ndarray:
    """Index of the first minimum (or maximum) of each non-empty bucket."""
    k = len(starts)
    w = int(sizes[0])
    if k > 1 and bool(np.all(sizes[:-1] == w)):
        # Evenly spaced x (the usual case): buckets are rows of a 2-D view, one pass each.
        head = v[: (k - 1) * w].reshape(k - 1, w)
        arg = np.argmax(head, axis=1) if use_max else np.argmin(head, axis=1)
        first = arg + starts[:-1]
        tail = v[starts[-1] :]
        last = starts[-1] + (int(np.argmax(tail)) if use_max else int(np.argmin(tail)))
        return np.append(first, last)
    red = np.maximum.reduceat(v, starts) if use_max else np.minimum.reduceat(v, starts)
    hits = np.flatnonzero(v == np.repeat(red, sizes))
    return _first_per_bucket(hits, starts)


def minmax_indices(xs: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted indices of the min and max point of each equal-width x bucket (≤ max_points)."""
    nan = np.isnan(values)
    has_nan = bool(nan.any())
    return _extremes(xs, values, max(1, max_points // (3 if has_nan else 2)), nan, has_nan)


def _extremes(
    xs: np.ndarray, values: np.ndarray, nb: int, nan: np.ndarray, has_nan: bool
) -> np.ndarray:
    n = len(xs)
    x0, x1 = float(xs[0]), float(xs[-1])
    span = x1 - x0
    if span > 0 and nb > 1:
        edges = x0 + span * (np.arange(1, nb, dtype=np.float64) / nb)
        bounds = np.searchsorted(xs, edges, side="left")
        all_starts = np.concatenate(([0], bounds, [n]))
    else:
        all_starts = np.array([0, n])
    sizes = np.diff(all_starts)
    keep = sizes > 0
    starts = all_starts[:-1][keep]
    sizes = sizes[keep]
    if has_nan:
        lo_v = np.where(nan, np.inf, values)
        hi_v = np.where(nan, -np.inf, values)
    else:
        lo_v = hi_v = values
    parts = [
        _arg_per_bucket(lo_v, starts, sizes, False),
        _arg_per_bucket(hi_v, starts, sizes, True),
    ]
    if has_nan:
        nan_idx = np.flatnonzero(nan)
        # Buckets holding a NaN: the first NaN at or after the bucket start, if inside it.
        pos = np.searchsorted(nan_idx, starts)
        inside = pos < len(nan_idx)
        cand = nan_idx[np.minimum(pos, len(nan_idx) - 1)]
        inside &= cand < starts + sizes
        parts.append(cand[inside])
    return np.unique(np.concatenate(parts))


# --- level of detail ----------------------------------------------------------------------------
# A chart of a million points into a thousand cannot afford to fetch and decode every point
# (~8 MB, tens of ms). Each chunk therefore gets a summary: the min/max (and first NaN) point of
# every LOD_SUB consecutive points, ~1/10 of the chunk. Summaries are computed on first read and
# kept in the Django cache (Redis in deployments), keyed by what identifies a chunk's content:
# chunks are immutable except for the tail chunk, which only grows (count and step_max change),
# and rewrites create new rows. They are used only for chunks wholly inside the range of a series
# whose output buckets each span >= LOD_FACTOR / 2 points, so a bucket's min/max is taken over
# >= 16 summarised runs; at worst a bucket edge moves by LOD_SUB points, and every spike survives
# (it is the extreme of its own run). Ranges that fit in max_points are always read raw.
LOD_SUB = 32
LOD_FACTOR = 256
LOD_TTL = 7 * 24 * 3600
_META = ("id", "series_id", "count", "step_min", "step_max", "wall_min", "wall_max", "vmin", "vmax")


def _lod_key(m: tuple) -> str:
    db = connection.settings_dict.get("NAME")
    return "q:lod1:" + ":".join(map(str, (db, *m[:1], *m[2:])))


def _inside(m: tuple, x: str, start: float | None, end: float | None, offset: float) -> bool:
    lo, hi = (m[3], m[4]) if x == "step" else (m[5] - offset, m[6] - offset)
    return (start is None or lo >= start) and (end is None or hi <= end)


def _lod(
    steps: np.ndarray, walls: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(steps)
    nan = np.isnan(values)
    idx = _extremes(np.arange(n), values, max(1, -(-n // LOD_SUB)), nan, bool(nan.any()))
    return steps[idx], walls[idx], values[idx]


def _cached_lods(metas: list[tuple]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if not metas:
        return {}
    keys = {_lod_key(m): m[0] for m in metas}
    try:
        found = cache.get_many(list(keys))
    except Exception:  # a cache outage must not break charts: read raw instead
        log.warning("LOD cache unavailable", exc_info=True)
        return {}
    return {keys[k]: v for k, v in found.items()}


def _store_lods(metas: list[tuple], fresh: dict[int, tuple]) -> None:
    items = {_lod_key(m): fresh[m[0]] for m in metas if m[0] in fresh}
    try:
        cache.set_many(items, timeout=LOD_TTL)
    except Exception:
        log.warning("LOD cache unavailable", exc_info=True)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


# --- JSON -------------------------------------------------------------------------------------


def nonfinite_str(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def json_floats(a: np.ndarray) -> np.ndarray | list:
    """An array orjson can write, with non-finite values as the strings JSON needs."""
    if a.dtype.kind != "f":
        return a
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    out: list = a.tolist()
    for i in np.flatnonzero(bad).tolist():
        out[i] = nonfinite_str(out[i])
    return out


def json_value(v: object) -> object:
    """A single value for JSON: non-finite floats as strings, everything else as is."""
    if isinstance(v, float) and not math.isfinite(v):
        return nonfinite_str(v)
    return v


def series_payload(items: list[SeriesData]) -> list[dict]:
    """The wire form of query results (arrays stay numpy for orjson's fast path)."""
    return [
        {
            "run": d.run,
            "key": d.key,
            "x": json_floats(d.x),
            "step": d.step,
            "value": json_floats(d.value),
            "wall": json_floats(d.wall),
            "downsampled": d.downsampled,
            "count": d.count,
        }
        for d in items
    ]


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

"""Storing scalar points: append to chunked series and keep the summary columns current.

Invariant kept by every write: the chunks of one series cover disjoint step ranges and hold
unique, sorted steps. An append past the last step extends the tail chunk (up to CHUNK_TARGET
points) or adds new chunks; a write that lands inside already-stored steps rewrites only the
chunks it overlaps, the new value of a repeated step replacing the old one. A retried batch
therefore never duplicates a point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from django.db import connection, transaction
from django.db.models import BinaryField, Case, F, Max, Min, Sum, When

from ..models import Run, Series, SeriesChunk, SeriesKind
from .series_codec import Points, decode, encode

CHUNK_TARGET = 8192


def series_kind_for(key: str) -> str:
    return SeriesKind.SYSTEM if key.startswith("sys/") else SeriesKind.METRIC


def _finite_min_max(values: np.ndarray) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    mask = ~np.isnan(values)
    if not mask.any():
        return None, None
    v = values[mask]
    return float(v.min()), float(v.max())


def _make_chunks(series: Series, points: Points) -> list[SeriesChunk]:
    chunks = []
    for start in range(0, len(points), CHUNK_TARGET):
        part = points.slice(start, start + CHUNK_TARGET)
        vmin, vmax = _finite_min_max(part.values)
        chunks.append(
            SeriesChunk(
                series=series,
                step_min=int(part.steps[0]),
                step_max=int(part.steps[-1]),
                count=len(part),
                vmin=vmin,
                vmax=vmax,
                wall_min=float(part.walls.min()),
                wall_max=float(part.walls.max()),
                data=encode(part),
            )
        )
    return chunks


def _combine(a: float | None, b: float | None, fn) -> float | None:  # type: ignore[no-untyped-def]
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def _lock_series(run: Run, keys: list[str], kinds: Mapping[str, str] | None) -> dict[str, Series]:
    def fetch() -> dict[str, Series]:
        qs = Series.objects.filter(run=run, key__in=keys).order_by("id")
        return {s.key: s for s in qs.select_for_update()}

    found = fetch()
    missing = [k for k in keys if k not in found]
    if missing:
        Series.objects.bulk_create(
            [
                Series(run=run, key=k, kind=(kinds or {}).get(k) or series_kind_for(k))
                for k in missing
            ],
            ignore_conflicts=True,  # a concurrent writer may create the same series
        )
        found = fetch()
    return found


def _tail_chunks(series_ids: list[int]) -> dict[int, SeriesChunk]:
    """The last chunk (highest steps) of each series; the data (as `small_data`) only of those
    with room left, which a pure append extends. One query: each round trip counts when a
    metric batch is a dozen of them."""
    if not series_ids:
        return {}
    small_data = Case(
        When(count__lt=CHUNK_TARGET, then=F("data")), default=None, output_field=BinaryField()
    )
    qs = SeriesChunk.objects.filter(series_id__in=series_ids).defer("data")
    qs = qs.annotate(small_data=small_data)
    if connection.vendor == "postgresql":
        rows = qs.order_by("series_id", "-step_max").distinct("series_id")
        return {c.series_id: c for c in rows}
    out: dict[int, SeriesChunk] = {}
    for sid in series_ids:
        c = qs.filter(series_id=sid).order_by("-step_max").first()
        if c is not None:
            out[sid] = c
    return out


def append_points(
    run: Run, data: Mapping[str, Points], kinds: Mapping[str, str] | None = None
) -> int:
    """Store points for several series of one run in one transaction; returns points written.

    `data` maps series key to columnar points in any order; repeated steps within the batch
    keep the last one.
    """
    batch = {k: p.normalized() for k, p in data.items() if len(p)}
    if not batch:
        return 0
    written = 0
    # No savepoint when called inside a transaction (a metric batch and its idempotency record):
    # an error here fails the whole request anyway, and SAVEPOINT/RELEASE are two round trips.
    with transaction.atomic(savepoint=False):
        series_by_key = _lock_series(run, sorted(batch), kinds)
        tails = _tail_chunks([s.pk for s in series_by_key.values()])
        new_chunks: list[SeriesChunk] = []
        updated_chunks: list[SeriesChunk] = []
        delete_ids: list[int] = []
        touched: list[Series] = []
        recompute: list[Series] = []
        for key, pts in batch.items():
            series = series_by_key[key]
            written += len(pts)
            tail = tails.get(series.pk)
            new_min = int(pts.steps[0])
            if tail is None or new_min > tail.step_max:
                # Pure append: extend a small tail chunk in place, then add full chunks.
                if tail is not None and tail.count < CHUNK_TARGET:
                    room = CHUNK_TARGET - tail.count
                    head, rest = pts.slice(0, room), pts.slice(room, len(pts))
                    old = decode(tail.small_data)
                    merged = Points.concat([old, head])
                    _refill(tail, merged)
                    updated_chunks.append(tail)
                    new_chunks.extend(_make_chunks(series, rest))
                else:
                    new_chunks.extend(_make_chunks(series, pts))
                vmin, vmax = _finite_min_max(pts.values)
                series.count += len(pts)
                series.min_value = _combine(series.min_value, vmin, min)
                series.max_value = _combine(series.max_value, vmax, max)
                if series.first_step is None:
                    series.first_step = new_min
                    series.first_wall = float(pts.walls[0])
                series.last_step = int(pts.steps[-1])
                series.last_value = float(pts.values[-1])
                series.last_wall = float(pts.walls[-1])
                touched.append(series)
            else:
                # Overlap: rewrite the chunks whose step ranges intersect the new points.
                new_max = int(pts.steps[-1])
                olds = list(
                    SeriesChunk.objects.filter(
                        series=series, step_max__gte=new_min, step_min__lte=new_max
                    ).order_by("step_min")
                )
                merged = Points.concat([*(decode(c.data) for c in olds), pts]).normalized()
                delete_ids.extend(c.pk for c in olds)
                new_chunks.extend(_make_chunks(series, merged))
                recompute.append(series)
        # Extended tails are replaced (delete + insert) rather than updated one by one: two
        # statements whatever the number of series.
        delete_ids.extend(c.pk for c in updated_chunks)
        if delete_ids:
            SeriesChunk.objects.filter(pk__in=delete_ids).delete()
        for chunk in updated_chunks:
            chunk.pk = None
        SeriesChunk.objects.bulk_create([*updated_chunks, *new_chunks], batch_size=500)
        for series in recompute:
            _recompute_summary(series)
        _save_summaries(touched + recompute)
    return written


SUMMARY_FIELDS = (
    "count",
    "first_step",
    "last_step",
    "last_value",
    "min_value",
    "max_value",
    "first_wall",
    "last_wall",
)


def _save_summaries(series: list[Series]) -> None:
    """Write the summary columns of `series` in one statement.

    On Postgres an `UPDATE ... FROM (VALUES ...)`: Django's bulk_update builds a CASE WHEN per
    column and row and resolving those expressions took a third of a metric batch's server time.
    """
    if not series:
        return
    if connection.vendor != "postgresql":
        Series.objects.bulk_update(series, SUMMARY_FIELDS, batch_size=500)
        return
    fields = [Series._meta.get_field(name) for name in SUMMARY_FIELDS]
    qn = connection.ops.quote_name
    casts = ["bigint", *(f.db_type(connection) for f in fields)]
    row = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    columns = ", ".join(qn(f.column) for f in fields)
    sets = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields)
    # Identifiers come from the model, every value is a parameter.
    head = f"UPDATE {qn(Series._meta.db_table)} AS s SET {sets} FROM (VALUES "  # noqa: S608
    tail = f") AS v(id, {columns}) WHERE s.id = v.id"
    with connection.cursor() as cursor:
        for start in range(0, len(series), 1000):  # ≤ 9,000 parameters per statement
            group = series[start : start + 1000]
            cursor.execute(
                head + ", ".join([row] * len(group)) + tail,
                [v for o in group for v in (o.pk, *(getattr(o, n) for n in SUMMARY_FIELDS))],
            )


def _refill(chunk: SeriesChunk, points: Points) -> None:
    vmin, vmax = _finite_min_max(points.values)
    chunk.step_min = int(points.steps[0])
    chunk.step_max = int(points.steps[-1])
    chunk.count = len(points)
    chunk.vmin, chunk.vmax = vmin, vmax
    chunk.wall_min = float(points.walls.min())
    chunk.wall_max = float(points.walls.max())
    chunk.data = encode(points)


def _recompute_summary(series: Series) -> None:
    agg = SeriesChunk.objects.filter(series=series).aggregate(
        count=Sum("count"),
        first=Min("step_min"),
        last=Max("step_max"),
        lo=Min("vmin"),
        hi=Max("vmax"),
    )
    series.count = agg["count"] or 0
    series.min_value, series.max_value = agg["lo"], agg["hi"]
    first = SeriesChunk.objects.filter(series=series).order_by("step_min").first()
    last = SeriesChunk.objects.filter(series=series).order_by("-step_max").first()
    if first is not None and last is not None:
        fp, lp = decode(first.data), decode(last.data)
        series.first_step, series.first_wall = int(fp.steps[0]), float(fp.walls[0])
        series.last_step, series.last_wall = int(lp.steps[-1]), float(lp.walls[-1])
        series.last_value = float(lp.values[-1])


def delete_points_from(run: Run, key: str, from_step: int) -> None:
    """Drop points with step >= from_step (TensorBoard's purge on a restarted run)."""
    with transaction.atomic():
        series = Series.objects.select_for_update().filter(run=run, key=key).first()
        if series is None:
            return
        chunks = list(SeriesChunk.objects.filter(series=series, step_max__gte=from_step))
        keep: list[SeriesChunk] = []
        for c in chunks:
            if c.step_min < from_step:
                pts = decode(c.data)
                n = int(np.searchsorted(pts.steps, from_step))
                keep.extend(_make_chunks(series, pts.slice(0, n)))
        SeriesChunk.objects.filter(pk__in=[c.pk for c in chunks]).delete()
        SeriesChunk.objects.bulk_create(keep)
        _recompute_summary(series)
        if series.count == 0:
            series.first_step = series.last_step = series.last_value = None
            series.min_value = series.max_value = series.first_wall = series.last_wall = None
        series.save()


def is_valid_value(value: float, allow_nonfinite: bool = True) -> bool:
    return allow_nonfinite or math.isfinite(value)

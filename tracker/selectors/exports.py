"""Exports at full resolution, streamed: series as CSV / JSON Lines, runs and projects as JSON,
projects as a zip.

Everything here is a generator of bytes that reads a few chunks at a time, so memory stays flat
whatever the size of the export. Chunks of a series are walked by step keyset
(step_min > last step written) rather than by a list of ids taken up front: a concurrent write
that rewrites chunks cannot make the export skip or repeat points.

Numbers are written in their shortest round-trip form (orjson), so a float read back is
bit-identical to the stored one. NaN and ±inf are written as NaN / Infinity / -Infinity in CSV
and as the strings "NaN" / "Infinity" / "-Infinity" in JSON.

CSV cells that are text (series keys, run names) and begin with = + - @ tab or CR get a leading
' so spreadsheets do not evaluate them as formulas; numbers are never altered.

Export JSON (project; a run export is one element of "runs" at the top level):

    {"format": "tracker-export", "version": 1, "project": "ws/p", "exported_at": iso,
     "runs": [{"id", "name", "status", "tags", "notes", "created_by", "created_at",
               "started_at", "ended_at", "source", "source_path",
               "params": {key: value},
               "series": [{"key", "kind", "count", "points": [[step, wall_time, value], ...]}],
               "images": [{"tag", "step", "index", "width", "height", "sha256", "mime",
                           "caption", "wall_time"}],
               "histograms": [{"tag", "step", "wall_time", "bucket_limits", "bucket_counts",
                               "min", "max", "num", "sum", "sum_squares"}],
               "text": [{"tag", "step", "wall_time", "value"}],
               "pr_curves": [{"tag", "step", "wall_time", "data"}],
               "artifacts": [{"path", "kind", "size", "sha256", "state"}]}],
     "hparams": {"params": [...], "metrics": [...], "rows": [...]}}
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import orjson
from django.utils import timezone

from ..access import Principal, visible_runs
from ..models import (
    Artifact,
    Histogram,
    Image,
    Param,
    PRCurve,
    Project,
    Run,
    Series,
    SeriesChunk,
    TextEntry,
)
from ..services.errors import ServiceError
from ..services.series_codec import Points
from ..storage import get_blob_store
from .hparams import hparams_table
from .series import decode_into
from .series_query import json_value

CHUNKS_PER_READ = 4  # ~32k points decoded at a time: bounds export memory
RUNS_PER_BATCH = 100
FLUSH_BYTES = 256 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NONFINITE_CSV = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}
_NONFINITE_JSON = {"nan": b'"NaN"', "inf": b'"Infinity"', "-inf": b'"-Infinity"'}
_OPT = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def csv_text(value: str) -> str:
    """A text cell safe from formula injection, quoted when it needs quoting (RFC 4180)."""
    if value.startswith(_FORMULA_START):
        value = "'" + value
    if any(c in value for c in ',"\n\r'):
        value = '"' + value.replace('"', '""') + '"'
    return value


def _tokens(a: np.ndarray, nonfinite: dict[str, bytes]) -> list[bytes]:
    """Each element of `a` as its shortest round-trip text (one orjson call for the array)."""
    if len(a) == 0:
        return []
    toks = orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    if a.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(a))
        for i in bad.tolist():
            toks[i] = nonfinite[repr(float(a[i]))]
    return toks


def iter_points(series: Series) -> Iterator[Points]:
    """All points of a series, a few chunks at a time, in step order."""
    last: int | None = None
    while True:
        qs = SeriesChunk.objects.filter(series_id=series.pk)
        if last is not None:
            qs = qs.filter(step_min__gt=last)
        rows = list(qs.order_by("step_min").values_list("count", "data")[:CHUNKS_PER_READ])
        if not rows:
            return
        total = sum(c for c, _ in rows)
        steps = np.empty(total, np.int64)
        walls = np.empty(total, np.float64)
        values = np.empty(total, np.float64)
        pos = 0
        for _, data in rows:
            pos += decode_into(data, steps[pos:], walls[pos:], values[pos:])
        last = int(steps[pos - 1])
        yield Points(steps[:pos], walls[:pos], values[:pos])
        if len(rows) < CHUNKS_PER_READ:
            return


def _series_for(run: Run, keys: list[str] | None) -> list[Series]:
    qs = Series.objects.filter(run=run).order_by("key")
    if keys:
        qs = qs.filter(key__in=keys)
    return list(qs)


def iter_series_csv(run: Run, keys: list[str] | None = None) -> Iterator[bytes]:
    """key,step,wall_time,value rows of a run's series (all, or the keys given)."""
    yield b"key,step,wall_time,value\r\n"
    for s in _series_for(run, keys):
        prefix = csv_text(s.key).encode() + b","
        for pts in iter_points(s):
            rows = zip(
                _tokens(pts.steps, _NONFINITE_CSV),
                _tokens(pts.walls, _NONFINITE_CSV),
                _tokens(pts.values, _NONFINITE_CSV),
                strict=True,
            )
            yield b"".join([prefix + b"%s,%s,%s\r\n" % r for r in rows])


def iter_series_jsonl(run: Run, keys: list[str] | None = None) -> Iterator[bytes]:
    """One JSON object per point: {"key", "step", "wall_time", "value"}."""
    for s in _series_for(run, keys):
        prefix = b'{"key":' + orjson.dumps(s.key) + b',"step":'
        for pts in iter_points(s):
            rows = zip(
                _tokens(pts.steps, _NONFINITE_JSON),
                _tokens(pts.walls, _NONFINITE_JSON),
                _tokens(pts.values, _NONFINITE_JSON),
                strict=True,
            )
            yield b"".join([prefix + b'%s,"wall_time":%s,"value":%s}\n' % r for r in rows])


def _iter_points_json(s: Series) -> Iterator[bytes]:
    first = True
    for pts in iter_points(s):
        rows = zip(
            _tokens(pts.steps, _NONFINITE_JSON),
            _tokens(pts.walls, _NONFINITE_JSON),
            _tokens(pts.values, _NONFINITE_JSON),
            strict=True,
        )
        body = b",".join([b"[%s,%s,%s]" % r for r in rows])
        yield body if first else b"," + body
        first = False


def _dt(v: Any) -> str | None:
    return v.isoformat() if v is not None else None


def _run_header(run: Run, username: str | None) -> dict[str, Any]:
    return {
        "id": run.pk,
        "name": run.name,
        "status": run.status,
        "tags": run.tags,
        "notes": run.notes,
        "created_by": username,
        "created_at": _dt(run.created_at),
        "started_at": _dt(run.started_at),
        "ended_at": _dt(run.ended_at),
        "source": run.source,
        "source_path": run.source_path,
    }


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return json_value(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _related(run_ids: list[int]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Params, series, media and artifacts of a batch of runs: a fixed number of queries."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {i: [] for i in run_ids}
        for name in ("params", "series", "images", "histograms", "text", "pr_curves", "artifacts")
    }
    for p in (
        Param.objects.filter(run_id__in=run_ids).order_by("key").values("run_id", "key", "value")
    ):
        out["params"][p["run_id"]].append(p)
    for s in Series.objects.filter(run_id__in=run_ids).order_by("key"):
        out["series"][s.run_id].append({"obj": s})
    for im in (
        Image.objects.filter(run_id__in=run_ids)
        .order_by("key", "step", "index")
        .values(
            "run_id",
            "key",
            "step",
            "index",
            "width",
            "height",
            "blob_id",
            "mime",
            "caption",
            "wall_time",
        )
    ):
        out["images"][im["run_id"]].append(
            {
                "tag": im["key"],
                "step": im["step"],
                "index": im["index"],
                "width": im["width"],
                "height": im["height"],
                "sha256": im["blob_id"],
                "mime": im["mime"],
                "caption": im["caption"],
                "wall_time": im["wall_time"],
            }
        )
    for name, model in (("histograms", Histogram), ("text", TextEntry), ("pr_curves", PRCurve)):
        for row in (
            model.objects.filter(run_id__in=run_ids)
            .order_by("key", "step")
            .values("run_id", "key", "step", *model.VALUE_FIELDS)
        ):
            rid = row.pop("run_id")
            row["tag"] = row.pop("key")
            out[name][rid].append(row)
    for a in (
        Artifact.objects.filter(run_id__in=run_ids)
        .order_by("path")
        .values("run_id", "path", "kind", "size", "sha256", "state")
    ):
        out["artifacts"][a.pop("run_id")].append(a)
    return out


def _iter_run_json(run: Run, username: str | None, rel: dict[str, Any]) -> Iterator[bytes]:
    head = _run_header(run, username)
    head["params"] = {p["key"]: p["value"] for p in rel["params"][run.pk]}
    yield orjson.dumps(_clean(head), option=_OPT)[:-1] + b',"series":['
    for i, item in enumerate(rel["series"][run.pk]):
        s: Series = item["obj"]
        meta = {"key": s.key, "kind": s.kind, "count": s.count}
        yield (b"," if i else b"") + orjson.dumps(meta)[:-1] + b',"points":['
        yield from _iter_points_json(s)
        yield b"]}"
    yield b"]"
    for name in ("images", "histograms", "text", "pr_curves", "artifacts"):
        yield b',"' + name.encode() + b'":' + orjson.dumps(_clean(rel[name][run.pk]), option=_OPT)
    yield b"}"


def _iter_runs(runs: Iterable[Run]) -> Iterator[tuple[Run, str | None, dict[str, Any]]]:
    batch: list[Run] = []

    def flush() -> Iterator[tuple[Run, str | None, dict[str, Any]]]:
        rel = _related([r.pk for r in batch])
        for r in batch:
            yield r, (r.created_by.username if r.created_by_id and r.created_by else None), rel

    for run in runs:
        batch.append(run)
        if len(batch) >= RUNS_PER_BATCH:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _buffered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Coalesce small pieces so the response writes a few hundred KB at a time."""
    buf: list[bytes] = []
    size = 0
    for p in pieces:
        buf.append(p)
        size += len(p)
        if size >= FLUSH_BYTES:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def iter_run_export(run: Run) -> Iterator[bytes]:
    """A run's whole record as one JSON object (the element format of a project export)."""
    rel = _related([run.pk])
    username = run.created_by.username if run.created_by_id and run.created_by else None
    return _buffered(_iter_run_json(run, username, rel))


def _project_runs(principal: Principal, project: Project) -> Iterator[Run]:
    """Visible runs, read in keyset batches so that the run list is never held whole."""
    last = 0
    base = visible_runs(principal, project).select_related("created_by").order_by("id")
    while True:
        batch = list(base.filter(id__gt=last)[:RUNS_PER_BATCH])
        yield from batch
        if len(batch) < RUNS_PER_BATCH:
            return
        last = batch[-1].pk


def _iter_project_json(principal: Principal, project: Project) -> Iterator[bytes]:
    head = {
        "format": "tracker-export",
        "version": 1,
        "project": project.full_slug,
        "exported_at": timezone.now().isoformat(),
    }
    yield orjson.dumps(head)[:-1] + b',"runs":['
    for i, (run, username, rel) in enumerate(_iter_runs(_project_runs(principal, project))):
        if i:
            yield b","
        yield from _iter_run_json(run, username, rel)
    hp = hparams_table(principal, project)
    hp.pop("truncated", None)
    yield b'],"hparams":' + orjson.dumps(_clean(hp), option=_OPT) + b"}"


def iter_project_export(principal: Principal, project: Project) -> Iterator[bytes]:
    return _buffered(_iter_project_json(principal, project))


# --- zip ----------------------------------------------------------------------------------------


class _Sink:
    """A write-only stream: zipfile writes into it, the response generator drains it."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, b: bytes) -> int:
        self.buf += b
        return len(b)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def zip_name(*parts: str) -> str:
    """A member name that cannot escape the archive's root whatever the tag looks like."""
    out = []
    for part in parts:
        for seg in _UNSAFE.sub("_", part).split("/"):
            if seg in ("", ".", ".."):
                continue
            out.append(seg[:100])
    return "/".join(out)


def iter_project_zip(principal: Principal, project: Project) -> Iterator[bytes]:
    """export.json, runs/<id>/metrics.csv and runs/<id>/images/<tag>/<step>-<index>.<ext>."""
    sink = _Sink()
    store = get_blob_store()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        with zf.open("export.json", "w", force_zip64=True) as f:
            for piece in _buffered(_iter_project_json(principal, project)):
                f.write(piece)
                if len(sink.buf) >= FLUSH_BYTES:
                    yield sink.take()
        for run in _project_runs(principal, project):
            with zf.open(f"runs/{run.pk}/metrics.csv", "w", force_zip64=True) as f:
                for piece in _buffered(iter_series_csv(run)):
                    f.write(piece)
                    if len(sink.buf) >= FLUSH_BYTES:
                        yield sink.take()
            images = Image.objects.filter(run=run).order_by("key", "step", "index")
            for im in images.values("key", "step", "index", "blob_id", "mime"):
                ext = _EXT.get(im["mime"], "bin")
                name = zip_name(
                    f"runs/{run.pk}/images", im["key"], f"{im['step']}-{im['index']}.{ext}"
                )
                # Images are already compressed: store them as they are.
                info = zipfile.ZipInfo(name, date_time=timezone.now().timetuple()[:6])
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=True) as f:
                    for chunk in store.iter_chunks(im["blob_id"]):
                        f.write(chunk)
                        if len(sink.buf) >= FLUSH_BYTES:
                            yield sink.take()
            yield sink.take()
    yield sink.take()


def check_format(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ServiceError(f"format must be one of {', '.join(allowed)}.", field="format")
    return value

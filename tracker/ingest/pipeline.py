"""Store the decoded events of one run: scalars, media, hparams, graphs — crash-safely.

`RunWriter` is fed record batches file by file (in TensorBoard's read order) by
`tracker.services.uploads`. It decodes them with the pure `SummaryDecoder`, applies
TensorBoard's purge semantics with `RestartPurger` (one per TensorBoard run = source
directory), buffers, and flushes in big batches. A flush is ONE transaction holding the data,
the purges of older data and every touched file's `bytes_parsed` + `parse_state`, so a
worker killed anywhere resumes from a state consistent with what is stored. Re-storing is
idempotent: points upsert by (series, step) and every media row upserts by its unique key.

Blobs (images, audio, graphs, embeddings) are written before that transaction: they are
content-addressed, so a blob written by a killed flush is simply reused by the retry.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connection, connections, transaction
from django.utils import timezone

from ..models import (
    Artifact,
    ArtifactKind,
    ArtifactState,
    Blob,
    Histogram,
    Image,
    IngestJob,
    PRCurve,
    Run,
    Series,
    SeriesKind,
    TextEntry,
    UploadFile,
)
from ..services import metrics
from ..services import runs as run_services
from ..services.logging import upsert_steps
from ..services.series_codec import Points
from ..storage import get_blob_store
from . import summaries as S
from .logdir import Purge, RestartPurger, series_key
from .tfevents import Problem, RecordBatch

# Points per flush (one transaction). Overridable so fault tests can flush often.
FLUSH_POINTS = int(os.environ.get("TRACKER_INGEST_FLUSH_POINTS", 500_000))
FLUSH_ITEMS = 20_000
FLUSH_BLOB_BYTES = 64 << 20
MAX_PROBLEMS_PER_FILE = 1000
KEY_MAX = 255
_PARAM_KEY_BAD = re.compile(r"[^A-Za-z0-9_./:\- ]")


def clean_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; everything else is kept verbatim."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def clean_key(key: str) -> str:
    return clean_text(key)[:KEY_MAX]


def json_floats(values: Iterable[float]) -> list[float | str]:
    """JSON (and jsonb) has no NaN/inf: spell them the way the metrics API does."""
    out: list[float | str] = []
    for v in values:
        f = float(v)
        if math.isfinite(f):
            out.append(f)
        elif math.isnan(f):
            out.append("NaN")
        else:
            out.append("Infinity" if f > 0 else "-Infinity")
    return out


def _float_or_none(v: float | None) -> float | None:
    return None if v is None else float(v)


def _artifact_path(*parts: str) -> str:
    """A normalized artifact path built from tags (no traversal whatever the tag says)."""
    segs: list[str] = []
    for part in parts:
        for seg in clean_text(part).replace("\\", "/").split("/"):
            if seg in ("", "."):
                continue
            segs.append("_" if seg == ".." else seg)
    return "/".join(segs)[:1024] or "_"


def _param_key(name: str) -> str:
    key = _PARAM_KEY_BAD.sub("_", name)[:KEY_MAX].strip("/") or "_"
    return "/".join(p if p != ".." else "_" for p in key.split("/"))


def _param_value(v: Any) -> Any:
    if isinstance(v, str):
        return clean_text(v)[:10000]
    if isinstance(v, dict):
        return {str(k): _param_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_param_value(x) for x in v]
    return v


def _purger(state: dict[str, Any] | None = None) -> RestartPurger:
    """TensorBoard's purge as `event_accumulator.EventAccumulator` applies it ("legacy").

    Every SessionLog.START purges, including the first one torch writes for
    `SummaryWriter(purge_step=N)`: that is what purge_step is documented to do, and what the
    reference accumulator shows. (The UI's plugin accumulator ignores a run's first START and
    would show old and new points side by side, which a store keyed by step cannot hold.)
    """
    return RestartPurger(state, semantics="legacy")


@dataclass
class _Source:
    """One TensorBoard run (a directory) feeding this Tracker run."""

    directory: str
    prefix: str
    decoder: S.SummaryDecoder
    purger: RestartPurger
    tag_codes: dict[str, int] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return {"decoder": self.decoder.state(), "purger": self.purger.state()}


@dataclass
class _FileMark:
    """What to persist for a file at the next flush."""

    file: UploadFile
    offset: int
    problems: list[dict[str, Any]]
    problem_count: int
    state: dict[str, Any]
    pending: dict[str, Any] | None = None
    scanned_to: int | None = None


@dataclass
class _Buffers:
    """Data decoded since the last flush (handed over whole to the flushing thread)."""

    sc: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    sc_points: int = 0
    images: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    histograms: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    texts: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    prcurves: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    hparam_keys: set[str] = field(default_factory=set)
    purges: list[tuple[_Source, Purge]] = field(default_factory=list)
    blob_bytes: int = 0
    items: int = 0


@dataclass
class _BlobItem:
    data: bytes
    sha256: str = ""


class RunWriter:
    """Buffers decoded data of one run and flushes it with the files' parse positions."""

    def __init__(
        self,
        run: Run,
        job_id: int | None = None,
        prefixes: Iterable[str] = (),
        flush_points: int = FLUSH_POINTS,
        background: bool | None = None,
    ) -> None:
        self.run = run
        self.job_id = job_id
        self.flush_points = flush_points
        # Every source prefix of this run: a restart purge of the root source must not touch
        # the series of merged sub-directories (train/, validation/, ...).
        self.prefixes = sorted({p for p in prefixes if p})
        self.sources: dict[str, _Source] = {}
        self.keys: list[str] = []  # code -> series key
        self.key_codes: dict[str, int] = {}
        self._reset_buffers()
        self.marks: dict[int, _FileMark] = {}
        # Per file being parsed: problems persisted before this parse, decode problems now.
        self._base_problems: dict[int, list[dict[str, Any]]] = {}
        self._base_count: dict[int, int] = {}
        self._decode_problems: dict[int, list[Problem]] = {}
        self.stats = {"points": 0, "flushes": 0}
        # Storing overlaps decoding: while the next buffer is decoded (CPU), a thread waits on
        # PostgreSQL and S3. Only outside a transaction: a thread has its own connection and
        # could not see rows of an enclosing, uncommitted transaction (eager tests).
        if background is None:
            background = connection.vendor == "postgresql" and not connection.in_atomic_block
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(1) if background else None
        self._inflight: Future[None] | None = None

    def _reset_buffers(self) -> None:
        self.buf = _Buffers()

    # --- sources and files ---------------------------------------------------------------

    def _source(self, f: UploadFile) -> _Source:
        directory = posixpath.dirname(f.relative_path) or "."
        src = self.sources.get(directory)
        if src is None:
            src = _Source(directory, f.key_prefix, S.SummaryDecoder(), _purger())
            self.sources[directory] = src
        return src

    def observe(self, f: UploadFile) -> None:
        """A file with nothing new: its saved state seeds the next file of its directory."""
        state = f.parse_state or {}
        if "decoder" in state:
            src = self._source(f)
            src.decoder = S.SummaryDecoder(state["decoder"])
            src.purger = _purger(state.get("purger"))

    def begin_file(self, f: UploadFile) -> None:
        self.observe(f)  # a partly parsed file resumes from its own state
        state = f.parse_state or {}
        self._base_problems[f.pk] = list(state.get("problems", []))
        self._base_count[f.pk] = int(state.get("problem_count", len(self._base_problems[f.pk])))
        self._decode_problems[f.pk] = []

    def _mark(
        self,
        f: UploadFile,
        offset: int,
        reader_problems: list[Problem],
        pending: dict[str, Any] | None = None,
        scanned_to: int | None = None,
    ) -> None:
        src = self._source(f)
        fresh = sorted([*reader_problems, *self._decode_problems[f.pk]], key=lambda p: p.offset)
        base = self._base_problems[f.pk]
        room = max(MAX_PROBLEMS_PER_FILE - len(base), 0)
        problems = base + [
            {"offset": p.offset, "kind": p.kind, "message": p.message} for p in fresh[:room]
        ]
        self.marks[f.pk] = _FileMark(
            f,
            offset,
            problems,
            self._base_count[f.pk] + len(fresh),
            src.state(),
            pending,
            scanned_to,
        )

    def add_batch(self, f: UploadFile, batch: RecordBatch, reader_problems: list[Problem]) -> None:
        src = self._source(f)
        decoded = src.decoder.decode_records(batch)
        self._decode_problems[f.pk].extend(decoded.problems)
        decoded, purges = src.purger.apply(decoded)
        for purge in purges:
            self._purge_buffered(src, purge)
            self.buf.purges.append((src, purge))
        self._add_scalars(src, decoded)
        self._add_items(src, decoded.items)
        self._mark(f, batch.complete_offset, reader_problems)
        if self._should_flush():
            self.flush()

    def end_file(
        self,
        f: UploadFile,
        complete_offset: int,
        reader_problems: list[Problem],
        pending_problem: Problem | None,
        scanned_to: int,
    ) -> None:
        pending = None
        if pending_problem is not None:
            pending = {
                "offset": pending_problem.offset,
                "kind": pending_problem.kind,
                "message": pending_problem.message,
            }
        elif complete_offset < scanned_to:
            pending = {
                "offset": complete_offset,
                "kind": "truncated",
                "message": (
                    f"incomplete record of {scanned_to - complete_offset} bytes at the end; "
                    "it is read once the rest of it is uploaded"
                ),
            }
        self._mark(f, complete_offset, reader_problems, pending, scanned_to)

    # --- buffering -----------------------------------------------------------------------

    def _code(self, key: str) -> int:
        code = self.key_codes.get(key)
        if code is None:
            code = self.key_codes[key] = len(self.keys)
            self.keys.append(key)
        return code

    def _add_scalars(self, src: _Source, decoded: S.DecodedBatch) -> None:
        tags = decoded.scalar_tags
        if not tags:
            return
        codes_by_tag = src.tag_codes
        get = codes_by_tag.get
        codes = [get(t, -1) for t in tags]
        if -1 in codes:
            for t in set(tags):
                if t not in codes_by_tag:
                    codes_by_tag[t] = self._code(clean_key(series_key(src.prefix, t)))
            codes = [codes_by_tag[t] for t in tags]
        self.buf.sc.append(
            (
                np.array(codes, dtype=np.int32),
                np.array(decoded.scalar_steps, dtype=np.int64),
                np.array(decoded.scalar_wall_times, dtype=np.float64),
                np.array(decoded.scalar_values, dtype=np.float64),
            )
        )
        self.buf.sc_points += len(tags)

    def _add_items(self, src: _Source, items: list[tuple[int, S.Item]]) -> None:
        for _offset, item in items:
            kind = type(item)
            if kind is S.Image:
                key = clean_key(series_key(src.prefix, item.tag))
                self.buf.images[(key, item.step, item.index)] = {
                    "blob": _BlobItem(item.encoded),
                    "wall_time": item.wall_time,
                    "width": item.width,
                    "height": item.height,
                    "mime": item.mime[:32],
                    "caption": clean_text(item.caption or "")[:1024],
                }
                self.buf.blob_bytes += len(item.encoded)
            elif kind is S.Histogram:
                key = clean_key(series_key(src.prefix, item.tag))
                self.buf.histograms[(key, item.step)] = {
                    "wall_time": item.wall_time,
                    "bucket_limits": json_floats(item.rights),
                    "bucket_counts": json_floats(item.counts),
                    "min": _float_or_none(item.lefts[0] if item.lefts else item.min),
                    "max": _float_or_none(item.max),
                    "num": _float_or_none(item.num),
                    "sum": _float_or_none(item.sum),
                    "sum_squares": _float_or_none(item.sum_squares),
                }
            elif kind is S.Text:
                key = clean_key(series_key(src.prefix, item.tag))
                self.buf.texts[(key, item.step)] = {
                    "wall_time": item.wall_time,
                    "value": clean_text(item.value),
                }
            elif kind is S.PRCurve:
                key = clean_key(series_key(src.prefix, item.tag))
                self.buf.prcurves[(key, item.step)] = {
                    "wall_time": item.wall_time,
                    "data": {
                        "num_thresholds": item.num_thresholds,
                        "thresholds": json_floats(item.thresholds),
                        "tp": json_floats(item.tp),
                        "fp": json_floats(item.fp),
                        "tn": json_floats(item.tn),
                        "fn": json_floats(item.fn),
                        "precision": json_floats(item.precision),
                        "recall": json_floats(item.recall),
                    },
                }
            elif kind is S.HParamsSessionStart:
                for name, value in item.hparams.items():
                    self.buf.params[_param_key(name)] = _param_value(value)
            elif kind is S.HParamsExperiment:
                for m in item.metric_infos:
                    base = series_key(src.prefix, m.group) if m.group else src.prefix
                    self.buf.hparam_keys.add(clean_key(series_key(base, m.tag)))
            elif kind is S.Audio:
                path = _artifact_path(
                    "audio", src.prefix, item.tag, f"step-{item.step}-{item.index}.wav"
                )
                self.buf.artifacts[path] = {
                    "kind": ArtifactKind.AUDIO,
                    "blob": _BlobItem(item.encoded),
                    "metadata": {
                        "tag": item.tag,
                        "step": item.step,
                        "wall_time": item.wall_time,
                        "sample_rate": item.sample_rate,
                        "content_type": item.content_type,
                        "label": item.label,
                    },
                }
                self.buf.blob_bytes += len(item.encoded)
            elif kind is S.Graph:
                path = _artifact_path(
                    "graphs", src.prefix, item.tag or item.kind, f"{item.kind}-step-{item.step}.pb"
                )
                self.buf.artifacts[path] = {
                    "kind": ArtifactKind.GRAPH,
                    "blob": _BlobItem(item.data),
                    "metadata": {"graph_kind": item.kind, "step": item.step, "tag": item.tag},
                }
                self.buf.blob_bytes += len(item.data)
            else:
                continue  # file versions, session logs (handled by the purger), unknowns
            self.buf.items += 1

    def _should_flush(self) -> bool:
        return (
            self.buf.sc_points >= self.flush_points
            or self.buf.items >= FLUSH_ITEMS
            or self.buf.blob_bytes >= FLUSH_BLOB_BYTES
        )

    # --- purges ----------------------------------------------------------------------------

    def _source_keys(
        self, src: _Source, tags: frozenset[str] | None, keys: Iterable[str]
    ) -> set[str]:
        if tags is not None:
            return {clean_key(series_key(src.prefix, t)) for t in tags}
        out = set()
        for key in keys:
            if src.prefix:
                if key.startswith(src.prefix + "/"):
                    out.add(key)
            elif not any(key.startswith(p + "/") for p in self.prefixes):
                out.add(key)
        return out

    def _purge_buffered(self, src: _Source, purge: Purge) -> None:
        """Drop buffered (not yet stored) data that TensorBoard's purge discards."""
        doomed = self._source_keys(src, purge.tags, self.keys)
        codes = np.array([self.key_codes[k] for k in doomed if k in self.key_codes], np.int32)
        if codes.size:
            kept = []
            for c, s, w, v in self.buf.sc:
                drop = (s >= purge.min_step) & np.isin(c, codes)
                if drop.any():
                    keep = ~drop
                    c, s, w, v = c[keep], s[keep], w[keep], v[keep]
                kept.append((c, s, w, v))
            self.buf.sc = kept
            self.buf.sc_points = sum(len(c) for c, _, _, _ in kept)
        for buf in (self.buf.images, self.buf.histograms, self.buf.texts, self.buf.prcurves):
            for k in [k for k in buf if k[0] in doomed and k[1] >= purge.min_step]:
                del buf[k]

    def _apply_purges(self, buf: _Buffers) -> None:
        if not buf.purges:
            return
        all_keys = set(Series.objects.filter(run=self.run).values_list("key", flat=True))
        for model in (Image, Histogram, TextEntry, PRCurve):
            all_keys |= set(model.objects.filter(run=self.run).values_list("key", flat=True))
        for src, purge in buf.purges:
            keys = self._source_keys(src, purge.tags, all_keys)
            for key in sorted(keys):
                metrics.delete_points_from(self.run, key, purge.min_step)
            for model in (Image, Histogram, TextEntry, PRCurve):
                model.objects.filter(run=self.run, key__in=keys, step__gte=purge.min_step).delete()

    # --- flushing --------------------------------------------------------------------------

    def _scalar_batch(self, buf: _Buffers, keys: list[str]) -> dict[str, Points]:
        if not buf.sc:
            return {}
        codes = np.concatenate([c for c, _, _, _ in buf.sc])
        steps = np.concatenate([s for _, s, _, _ in buf.sc])
        walls = np.concatenate([w for _, _, w, _ in buf.sc])
        values = np.concatenate([v for _, _, _, v in buf.sc])
        order = np.argsort(codes, kind="stable")  # stable: file order (last write) survives
        codes = codes[order]
        bounds = np.flatnonzero(np.diff(codes)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(codes)]])
        out: dict[str, Points] = {}
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            idx = order[a:b]
            out[keys[int(codes[a])]] = Points(steps[idx], walls[idx], values[idx])
        return out

    def _write_blobs(self, buf: _Buffers) -> None:
        items = [e["blob"] for e in buf.images.values()]
        items += [e["blob"] for e in buf.artifacts.values()]
        if not items:
            return
        store = get_blob_store()
        unique: dict[bytes, list[_BlobItem]] = {}
        for it in items:
            unique.setdefault(it.data, []).append(it)
        datas = list(unique)
        if len(datas) == 1:
            refs = [store.put_bytes(datas[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(datas))) as pool:
                refs = list(pool.map(store.put_bytes, datas))
        for data, ref in zip(datas, refs, strict=True):
            for it in unique[data]:
                it.sha256 = ref.sha256
        Blob.objects.bulk_create(
            [Blob(sha256=r.sha256, size=r.size) for r in refs], ignore_conflicts=True
        )

    def flush(self) -> None:
        """Hand the buffered data and file positions to storage (a thread when possible)."""
        buf, marks = self.buf, self.marks
        if not marks and not buf.sc and not buf.items and not buf.purges:
            return
        self.marks = {}
        self._reset_buffers()
        keys = list(self.keys)
        if self._pool is None:
            self._store(buf, marks, keys)
            return
        self._wait()  # one flush in flight: ordered writes, bounded memory
        self._inflight = self._pool.submit(self._store_in_thread, buf, marks, keys)

    def close(self) -> None:
        """Flush what is left and wait until it is stored (raises what storing raised)."""
        try:
            self.flush()
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.submit(connections.close_all).result()
                self._pool.shutdown()
                self._pool = None

    def _wait(self) -> None:
        if self._inflight is not None:
            fut, self._inflight = self._inflight, None
            fut.result()

    def _store_in_thread(self, buf: _Buffers, marks: dict[int, _FileMark], keys: list[str]) -> None:
        try:
            self._store(buf, marks, keys)
        except BaseException:
            connections.close_all()  # never reuse a connection left mid-transaction
            raise

    def _store(self, buf: _Buffers, marks: dict[int, _FileMark], keys: list[str]) -> None:
        scalars = self._scalar_batch(buf, keys)
        self._write_blobs(buf)
        run = self.run
        with transaction.atomic():
            self._apply_purges(buf)
            if scalars:
                kinds = {k: SeriesKind.HPARAM for k in buf.hparam_keys}
                self.stats["points"] += metrics.append_points(run, scalars, kinds)
            if buf.hparam_keys:
                Series.objects.filter(run=run, key__in=buf.hparam_keys).exclude(
                    kind=SeriesKind.HPARAM
                ).update(kind=SeriesKind.HPARAM)
            self._store_media(buf)
            if buf.params:
                run_services.set_params(run, buf.params)
            for mark in marks.values():
                state = dict(mark.state)
                state["problems"] = mark.problems
                state["problem_count"] = mark.problem_count
                state["pending"] = mark.pending
                if mark.scanned_to is not None:
                    state["scanned_to"] = mark.scanned_to
                UploadFile.objects.filter(pk=mark.file.pk).update(
                    bytes_parsed=mark.offset, parse_state=state, updated_at=timezone.now()
                )
        if self.job_id is not None:
            # Heartbeat outside the data transaction: parallel run tasks must not queue on
            # the job row.
            IngestJob.objects.filter(pk=self.job_id).update(updated_at=timezone.now())
        self.stats["flushes"] += 1

    def _store_media(self, buf: _Buffers) -> None:
        run = self.run
        if buf.images:
            Image.objects.bulk_create(
                [
                    Image(
                        run=run,
                        key=key,
                        step=step,
                        index=index,
                        wall_time=e["wall_time"],
                        blob_id=e["blob"].sha256,
                        width=e["width"],
                        height=e["height"],
                        mime=e["mime"],
                        caption=e["caption"],
                    )
                    for (key, step, index), e in buf.images.items()
                ],
                update_conflicts=True,
                unique_fields=["run", "key", "step", "index"],
                update_fields=["wall_time", "blob", "width", "height", "mime", "caption"],
                batch_size=1000,
            )
        for model, entries in (
            (Histogram, buf.histograms),
            (TextEntry, buf.texts),
            (PRCurve, buf.prcurves),
        ):
            if entries:
                rows = [model(run=run, key=k, step=s, **e) for (k, s), e in entries.items()]
                upsert_steps(model, rows, batch_size=1000)
        if buf.artifacts:
            Artifact.objects.bulk_create(
                [
                    Artifact(
                        run=run,
                        path=path,
                        kind=e["kind"],
                        size=len(e["blob"].data),
                        sha256=e["blob"].sha256,
                        blob_id=e["blob"].sha256,
                        state=ArtifactState.READY,
                        bytes_received=len(e["blob"].data),
                        metadata=e["metadata"],
                    )
                    for path, e in buf.artifacts.items()
                ],
                update_conflicts=True,
                unique_fields=["run", "path"],
                update_fields=["kind", "size", "sha256", "blob", "state", "metadata"],
                batch_size=500,
            )


def store_artifact_file(run: Run, f: UploadFile, stream: Any, run_path: str) -> None:
    """Projector configs and embedding files next to the event files become artifacts.

    Streamed into the blob store (embedding tensors can be large), then the row and the
    file's parse position commit together.
    """
    rel = f.relative_path
    if run_path not in ("", ".") and rel.startswith(run_path + "/"):
        rel = rel[len(run_path) + 1 :]
    ref = get_blob_store().put_stream(stream)
    with transaction.atomic():
        Blob.objects.bulk_create([Blob(sha256=ref.sha256, size=ref.size)], ignore_conflicts=True)
        Artifact.objects.update_or_create(
            run=run,
            path=_artifact_path("embeddings", rel),
            defaults={
                "kind": ArtifactKind.EMBEDDING,
                "size": ref.size,
                "sha256": ref.sha256,
                "blob_id": ref.sha256,
                "state": ArtifactState.READY,
                "bytes_received": ref.size,
                "metadata": {"source_path": f.relative_path},
            },
        )
        state = {"scanned_to": ref.size, "artifact": True}
        UploadFile.objects.filter(pk=f.pk).update(
            bytes_parsed=ref.size, parse_state=state, updated_at=timezone.now()
        )

"""Logdir uploads: the resumable upload protocol, archive intake and incremental parsing.

Bytes first, parsing second. A client declares the files of a logdir (an `IngestJob` plus one
`UploadFile` per path, unique per project so that re-uploading resumes), appends chunks at
exact offsets (each chunk a content-addressed blob + an `UploadChunk` row), then finishes;
a Celery task parses. Parsing is incremental and crash-safe: every flush stores decoded data
*and* advances `bytes_parsed`/`parse_state` in one transaction, so a worker killed at any
point leaves a state from which a re-run stores exactly the same data (points upsert by step,
media by their unique keys).

One job fans out into one task per run (runs are independent and CPU-bound to decode), each
guarded by a Postgres advisory lock so that duplicate messages (acks_late, the reconciler)
are harmless; the last run task to finish finalizes the job.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from ..ingest import archive as archive_mod
from ..ingest import logdir as logdir_mod
from ..ingest.tfevents import RecordReader
from ..models import (
    Blob,
    Histogram,
    Image,
    IngestJob,
    JobKind,
    JobState,
    Project,
    Run,
    RunSource,
    RunStatus,
    Series,
    TextEntry,
    UploadChunk,
    UploadFile,
)
from ..selectors.jobs import collect_problems
from ..storage import BlobRef, S3BlobStore, get_blob_store
from .errors import Conflict, ServiceError, TooLarge

log = logging.getLogger(__name__)

MAX_FILES_PER_UPLOAD = 10_000
MAX_CHUNK_BYTES = 64 << 20
ARCHIVE_APPEND_BLOCK = 8 << 20
HEAD_BYTES = 1024
MAX_ATTEMPTS = 5
RUNS_MODES = ("merge", "dirs")

_JOB_LOCK = 0x7472_6A00_0000_0000  # "trj": job-level task lock namespace
_RUN_LOCK = 0x7472_7200_0000_0000  # "trr": run-level parse lock namespace


def max_chunk_bytes() -> int:
    return int(getattr(settings, "TRACKER_UPLOAD_MAX_CHUNK", MAX_CHUNK_BYTES))


def archive_limits() -> archive_mod.ArchiveLimits:
    d = archive_mod.ArchiveLimits()
    return archive_mod.ArchiveLimits(
        max_members=int(getattr(settings, "TRACKER_ARCHIVE_MAX_MEMBERS", d.max_members)),
        max_total_bytes=int(getattr(settings, "TRACKER_ARCHIVE_MAX_BYTES", d.max_total_bytes)),
        max_member_bytes=int(
            getattr(settings, "TRACKER_ARCHIVE_MAX_MEMBER_BYTES", d.max_member_bytes)
        ),
        max_ratio=float(getattr(settings, "TRACKER_ARCHIVE_MAX_RATIO", d.max_ratio)),
        ratio_floor=int(getattr(settings, "TRACKER_ARCHIVE_RATIO_FLOOR", d.ratio_floor)),
    )


# --- paths -------------------------------------------------------------------------------------


def clean_path(path: Any, field: str = "path") -> str:
    """The stored form of a client-supplied relative path, or a 400 saying what is wrong."""
    try:
        return logdir_mod.safe_relative_path(path)
    except logdir_mod.UnsafePathError as exc:
        raise ServiceError(
            f"Not a safe relative path inside the logdir: {exc}.",
            field=field,
            code="invalid_path",
        ) from None


def is_wanted_member(path: str) -> bool:
    """Archive members worth keeping: event files and what the plan attaches as artifacts."""
    name = path.rsplit("/", 1)[-1]
    return (
        logdir_mod.is_tfevents_file(path)
        or name == logdir_mod.PROJECTOR_CONFIG
        or logdir_mod._is_embedding_file(name)
    )


# --- creating uploads ----------------------------------------------------------------------------


def create_upload(
    *,
    project: Project,
    user: Any,
    files: list[dict[str, Any]],
    runs_mode: str = "merge",
    root_name: str = "",
) -> IngestJob:
    """Declare the files of a logdir; each answers with the bytes the server already holds."""
    if runs_mode not in RUNS_MODES:
        raise ServiceError("runs_mode is 'merge' or 'dirs'.", field="runs_mode")
    if not files:
        raise ServiceError("An upload needs at least one file.", field="files")
    if len(files) > MAX_FILES_PER_UPLOAD:
        raise TooLarge(f"At most {MAX_FILES_PER_UPLOAD} files per upload.", field="files")
    declared: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(files):
        path = clean_path(item.get("path"), f"files[{i}].path")
        if path in declared:
            raise ServiceError(f"{path!r} is listed twice.", field=f"files[{i}].path")
        declared[path] = item
    with transaction.atomic():
        job = IngestJob.objects.create(
            project=project,
            kind=JobKind.UPLOAD,
            runs_mode=runs_mode,
            created_by=user,
            # The display name of a run at the logdir root (the client's logdir basename).
            summary={"root_name": root_name[:255]} if root_name else {},
        )
        _claim_files(job, declared)
    return job


def _claim_files(job: IngestJob, declared: dict[str, dict[str, Any]]) -> list[UploadFile]:
    """Create missing UploadFiles and point all of them at `job`.

    A declared size smaller than what we hold (or a different head hash) means the path now
    names another file: its chunks are dropped so it uploads afresh. Stored data stays; the
    re-parse upserts over it.
    """
    paths = list(declared)
    UploadFile.objects.bulk_create(
        [UploadFile(project=job.project, relative_path=p) for p in paths],
        ignore_conflicts=True,
        batch_size=1000,
    )
    rows = list(
        UploadFile.objects.select_for_update()
        .filter(project=job.project, relative_path__in=paths)
        .order_by("pk")
    )
    reset: list[UploadFile] = []
    for f in rows:
        item = declared[f.relative_path]
        size = item.get("size")
        head = item.get("head_sha256") or ""
        if (size is not None and int(size) < f.bytes_received) or (
            head and f.head_sha256 and head != f.head_sha256
        ):
            reset.append(f)
    for f in reset:
        UploadChunk.objects.filter(file=f).delete()
        f.bytes_received = f.bytes_parsed = 0
        f.parse_state = {}
        f.head_sha256 = ""
    if reset:
        UploadFile.objects.bulk_update(
            reset, ["bytes_received", "bytes_parsed", "parse_state", "head_sha256"]
        )
    UploadFile.objects.filter(pk__in=[f.pk for f in rows]).update(job=job)
    return rows


# --- appending bytes -----------------------------------------------------------------------------


def get_job_file(job: IngestJob, path: Any) -> UploadFile:
    rel = clean_path(path)
    f = UploadFile.objects.filter(job=job, relative_path=rel).first()
    if f is None:
        raise ServiceError(
            f"This upload has no file {rel!r}; declare it when creating the upload.",
            field="path",
            code="unknown_file",
        )
    return f


def append_chunk(*, job: IngestJob, path: Any, offset: Any, data: bytes) -> int:
    """Append `data` at `offset` of a declared file; returns the new bytes_received.

    Offsets must be exact: past the end → 409 offset_mismatch (with expected_offset) so the
    client seeks; overlapping bytes already held must be identical (a retried chunk), else
    409 content_mismatch.
    """
    try:
        offset = int(offset)
    except (TypeError, ValueError):
        raise ServiceError("offset is a non-negative integer.", field="offset") from None
    if offset < 0:
        raise ServiceError("offset is a non-negative integer.", field="offset")
    f = get_job_file(job, path)
    return _append(f, offset, data)


def _append(f: UploadFile, offset: int, data: bytes) -> int:
    with transaction.atomic():
        f = UploadFile.objects.select_for_update().get(pk=f.pk)
        received = f.bytes_received
        if offset > received:
            raise Conflict(
                f"This file has {received} bytes; send the chunk at offset {received}.",
                code="offset_mismatch",
                field="offset",
                expected_offset=received,
            )
        overlap = min(received - offset, len(data))
        if overlap:
            held = b"".join(_iter_file_bytes(f, offset, offset + overlap))
            if held != data[:overlap]:
                raise Conflict(
                    f"Bytes at offset {offset} differ from the ones already received.",
                    code="content_mismatch",
                    field="offset",
                    expected_offset=received,
                )
        new = data[overlap:]
        if not new:
            return received
        ref = _put_chunk_blob(new)
        Blob.objects.bulk_create([Blob(sha256=ref.sha256, size=ref.size)], ignore_conflicts=True)
        UploadChunk.objects.create(file=f, offset=received, length=len(new), blob_sha256=ref.sha256)
        fields = {"bytes_received": received + len(new), "updated_at": timezone.now()}
        if not f.head_sha256 and received < HEAD_BYTES <= received + len(new):
            prefix = b"".join(_iter_file_bytes(f, 0, received)) if received else b""
            fields["head_sha256"] = hashlib.sha256((prefix + new)[:HEAD_BYTES]).hexdigest()
        UploadFile.objects.filter(pk=f.pk).update(**fields)
        return received + len(new)


def _put_chunk_blob(data: bytes) -> BlobRef:
    """Store a chunk that is already in memory with one PUT.

    The generic put path streams anything of 8 MiB or more through a temporary multipart
    upload plus a server-side copy (it cannot know the hash before reading); a chunk in hand
    can be hashed first and PUT straight to its content address. Re-putting identical
    content is harmless, so no existence check is spent on fresh chunks.
    """
    store = get_blob_store()
    if isinstance(store, S3BlobStore):
        sha = hashlib.sha256(data).hexdigest()
        store.client.put_object(Bucket=store.bucket, Key=store.key(sha), Body=data)
        return BlobRef(sha, len(data))
    return store.put_bytes(data)


def _iter_file_bytes(f: UploadFile, start: int, end: int) -> Iterator[bytes]:
    """Stream bytes [start, end) of an uploaded file from its chunks (never all in memory)."""
    if end <= start:
        return
    chunks = (
        UploadChunk.objects.filter(file_id=f.pk, offset__lt=end)
        .annotate(stop=F("offset") + F("length"))
        .filter(stop__gt=start)
        .order_by("offset")
        .values_list("offset", "length", "blob_sha256")
    )
    for c_off, c_len, sha in chunks.iterator():
        lo = max(start, c_off) - c_off
        hi = min(end, c_off + c_len) - c_off
        yield from _read_blob_range(sha, lo, hi)


def _read_blob_range(sha: str, lo: int, hi: int, block: int = 1 << 20) -> Iterator[bytes]:
    store = get_blob_store()
    if isinstance(store, S3BlobStore):
        body = store.client.get_object(
            Bucket=store.bucket, Key=store.key(sha), Range=f"bytes={lo}-{hi - 1}"
        )["Body"]
        yield from body.iter_chunks(block)
        return
    with store.open(sha) as fh:
        fh.seek(lo)
        left = hi - lo
        while left > 0:
            data = fh.read(min(block, left))
            if not data:
                break
            left -= len(data)
            yield data


# --- finishing, archives -------------------------------------------------------------------------


def finish_upload(job: IngestJob, task: Any) -> IngestJob:
    """Queue parsing. Finishing again (more bytes arrived, --watch) re-queues the same job."""
    with transaction.atomic():
        job = IngestJob.objects.select_for_update().get(pk=job.pk)
        if job.state != JobState.RUNNING:
            job.state = JobState.PENDING
            job.finished_at = None
            job.error = ""
            job.save(update_fields=["state", "finished_at", "error", "updated_at"])
    from .jobs import enqueue

    enqueue(job, task)
    job.refresh_from_db()
    return job


def create_archive_job(
    *, project: Project, user: Any, upload: IO[bytes], runs_mode: str, task: Any
) -> IngestJob:
    """Check the whole archive first (bombs, member cap) so a refused one leaves no trace."""
    if runs_mode not in RUNS_MODES:
        raise ServiceError("runs_mode is 'merge' or 'dirs'.", field="runs_mode")
    upload.seek(0)
    head = upload.read(1024)
    upload.seek(0)
    limits = archive_limits()
    try:
        fmt = archive_mod.detect_format(head)
        manifest = archive_mod.scan(upload, fmt, limits)
    except archive_mod.ArchiveRejected as exc:
        raise ServiceError(exc.message, field="file", code=exc.code) from None
    upload.seek(0)
    ref = get_blob_store().put_stream(upload)
    problems = [
        {"file": r.name, "offset": 0, "kind": r.kind, "message": r.message}
        for r in manifest.rejected
    ]
    with transaction.atomic():
        Blob.objects.bulk_create([Blob(sha256=ref.sha256, size=ref.size)], ignore_conflicts=True)
        job = IngestJob.objects.create(
            project=project,
            kind=JobKind.ARCHIVE,
            runs_mode=runs_mode,
            created_by=user,
            source_blob=ref.sha256,
            problems=problems,
            summary={
                "archive": {"format": fmt, "members": len(manifest.files)},
                "intake_problems": problems,
            },
        )
    from .jobs import enqueue

    enqueue(job, task)
    job.refresh_from_db()
    return job


def _expand_archive(job: IngestJob) -> None:
    """Turn archive members into UploadFiles as if each had been uploaded (idempotent)."""
    limits = archive_limits()
    store = get_blob_store()
    with tempfile.TemporaryFile() as spool:
        # A local copy of the *archive* (zip needs to seek); members never touch a path.
        for block in store.iter_chunks(job.source_blob):
            spool.write(block)
        spool.seek(0)
        fmt = archive_mod.detect_format(spool.read(1024))
        spool.seek(0)
        ignored = 0
        for item in archive_mod.iter_members(spool, fmt, limits):
            if isinstance(item, archive_mod.RejectedMember):
                continue  # reported when the job was created
            if not is_wanted_member(item.path):
                ignored += 1
                for _ in item.iter_chunks():
                    pass
                continue
            (f,) = _claim_files_tx(job, item.path, item.size)
            offset = 0
            buf = bytearray()
            for block in item.iter_chunks():
                buf += block
                if len(buf) >= ARCHIVE_APPEND_BLOCK:
                    offset = _archive_append(f, offset, bytes(buf))
                    buf.clear()
            if buf or offset == 0:
                _archive_append(f, offset, bytes(buf))
    summary = dict(job.summary)
    summary["archive_expanded"] = True
    summary["ignored_files"] = ignored
    IngestJob.objects.filter(pk=job.pk).update(summary=summary, updated_at=timezone.now())
    job.summary = summary


def _claim_files_tx(job: IngestJob, path: str, size: int) -> list[UploadFile]:
    with transaction.atomic():
        return _claim_files(job, {path: {"path": path, "size": size}})


def _archive_append(f: UploadFile, offset: int, data: bytes) -> int:
    try:
        return _append(f, offset, data) if data else offset
    except Conflict:
        # Same path, different bytes: the archive carries a new version of the file.
        with transaction.atomic():
            UploadChunk.objects.filter(file=f).delete()
            UploadFile.objects.filter(pk=f.pk).update(
                bytes_received=0, bytes_parsed=0, parse_state={}, head_sha256=""
            )
        if offset:
            raise
        return _append(f, 0, data)


# --- parsing -------------------------------------------------------------------------------------


@contextmanager
def _advisory_lock(namespace: int, ident: int) -> Iterator[bool]:
    """A session lock that Postgres drops by itself if the worker dies (SIGKILL included)."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = namespace | (ident & 0xFFFF_FFFF_FFFF)
    key = key - (1 << 64) if key >= 1 << 63 else key
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = bool(cur.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])


def _file_has_work(f: UploadFile) -> bool:
    return (f.parse_state or {}).get("scanned_to") != f.bytes_received


def process_job(job_id: int, run_task: Callable[[int, int], None]) -> None:
    """Intake (archives), plan runs, fan out one parse per run with work; finalize if none."""
    with _advisory_lock(_JOB_LOCK, job_id) as got:
        if not got:
            return  # another worker holds this job
        job = IngestJob.objects.select_related("project__workspace").filter(pk=job_id).first()
        if job is None or job.state in (JobState.SUCCEEDED, JobState.FAILED):
            return
        now = timezone.now()
        IngestJob.objects.filter(pk=job.pk).update(
            state=JobState.RUNNING,
            started_at=job.started_at or now,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        try:
            if job.kind == JobKind.ARCHIVE and not job.summary.get("archive_expanded"):
                _expand_archive(job)
        except archive_mod.ArchiveRejected as exc:
            fail_job(job.pk, exc.message)
            return
        run_ids = assign_runs(job)
        pending = sorted(
            {
                f.run_id
                for f in UploadFile.objects.filter(job=job, run__isnull=False)
                if _file_has_work(f)
            }
        )
        if not pending:
            maybe_finalize(job.pk)
            return
        for run_id in pending:
            run_task(job.pk, run_id)
        log.info("job %s: %d runs (%d with new bytes)", job.pk, len(run_ids), len(pending))


def fail_job(job_id: int, message: str) -> None:
    IngestJob.objects.filter(pk=job_id).update(
        state=JobState.FAILED, error=message[:4000], finished_at=timezone.now()
    )


def assign_runs(job: IngestJob) -> list[int]:
    """Give every file of the job its run and key prefix (kept once given, for stability)."""
    files = list(UploadFile.objects.filter(job=job).order_by("relative_path"))
    todo = {f.relative_path: f for f in files if f.run_id is None}
    if todo:
        root_name = (job.summary or {}).get("root_name") or None
        plans = logdir_mod.plan_runs(
            [f.relative_path for f in files], mode=job.runs_mode, root_name=root_name
        )
        for planned in plans:
            wanted = [(p, src.prefix) for src in planned.sources for p in src.files]
            wanted += [(p, "") for p in planned.artifacts]
            if not any(p in todo for p, _ in wanted):
                continue
            run = _get_or_create_run(job, planned.path, planned.name)
            for path, prefix in wanted:
                f = todo.get(path)
                if f is not None:
                    f.run_id = run.pk
                    f.key_prefix = prefix[:255]
        placed = [f for f in todo.values() if f.run_id is not None]
        UploadFile.objects.bulk_update(placed, ["run", "key_prefix"], batch_size=1000)
        for f in todo.values():
            if f.run_id is None:
                state = {"ignored": "not a TensorBoard event file", "scanned_to": f.bytes_received}
                UploadFile.objects.filter(pk=f.pk).update(parse_state=state)
    return sorted({f.run_id for f in files if f.run_id is not None})


def _get_or_create_run(job: IngestJob, path: str, name: str) -> Run:
    project = job.project
    found = Run.objects.filter(project=project, source=RunSource.UPLOAD, source_path=path).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return Run.objects.create(
                project=project,
                name=(name or path or project.slug)[:255],
                created_by=job.created_by,
                source=RunSource.UPLOAD,
                source_path=path,
                status=RunStatus.FINISHED,
                started_at=timezone.now(),
            )
    except IntegrityError:  # a concurrent job created it
        return Run.objects.get(project=project, source=RunSource.UPLOAD, source_path=path)


def ingest_run(job_id: int, run_id: int) -> None:
    """Parse the new bytes of every file of one run, in TensorBoard's order, in big batches."""
    from ..ingest.pipeline import RunWriter, store_artifact_file

    with _advisory_lock(_RUN_LOCK, run_id) as got:
        if not got:
            return  # a live worker is on this run; it finalizes the job when done
        job = IngestJob.objects.filter(pk=job_id).first()
        run = Run.objects.filter(pk=run_id).first()
        if job is None or run is None:
            return
        # Every file of the run (not only this job's): earlier files seed decoder and purge
        # state of their directory, and their prefixes scope restart purges.
        files = list(UploadFile.objects.filter(run=run))
        files.sort(key=_read_order)
        writer = RunWriter(run, job_id=job.pk, prefixes=[f.key_prefix for f in files])
        started = time.perf_counter()
        try:
            for f in files:
                if not logdir_mod.is_tfevents_file(f.relative_path):
                    if f.job_id == job.pk and _file_has_work(f):
                        stream = _ChunkStream(_iter_file_bytes(f, 0, f.bytes_received))
                        store_artifact_file(run, f, stream, run.source_path)
                    continue
                if f.job_id == job.pk and _file_has_work(f):
                    parse_file(writer, f)
                else:
                    writer.observe(f)
        finally:
            writer.close()
        log.info(
            "job %s run %s: %d points in %d flushes, %.2fs",
            job_id,
            run_id,
            writer.stats["points"],
            writer.stats["flushes"],
            time.perf_counter() - started,
        )
    maybe_finalize(job_id)


def _read_order(f: UploadFile) -> tuple[str, tuple[int, int, str]]:
    directory = f.relative_path.rsplit("/", 1)[0] if "/" in f.relative_path else "."
    return directory, logdir_mod.tfevents_sort_key(f.relative_path)


class _ChunkStream:
    """A read()-able view of a byte-chunk iterator (for streaming into the blob store)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data = self.buf + b"".join(self.chunks)
            self.buf = b""
            return data
        while len(self.buf) < n:
            nxt = next(self.chunks, None)
            if nxt is None:
                break
            self.buf += nxt
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def parse_file(writer: Any, f: UploadFile) -> None:
    """Feed the bytes [bytes_parsed, bytes_received) of one file to the run writer."""
    snapshot = f.bytes_received
    start = f.bytes_parsed
    reader = RecordReader(_iter_file_bytes(f, start, snapshot), start, final=False)
    writer.begin_file(f)
    for batch in reader.batches():
        writer.add_batch(f, batch, reader.problems)
    writer.end_file(f, reader.complete_offset, reader.problems, reader.pending_problem, snapshot)


def maybe_finalize(job_id: int) -> bool:
    """Mark the job succeeded once every file has been read up to what was received."""
    with transaction.atomic():
        job = IngestJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state in (JobState.SUCCEEDED, JobState.FAILED):
            return False
        # In file order, as the API lists them: the row's problem list must read the same.
        files = list(UploadFile.objects.filter(job=job).order_by("relative_path"))
        if any(_file_has_work(f) for f in files):
            return False
        summary = dict(job.summary)
        summary.update(job_totals(job, files))
        job.summary = summary
        # The whole list on the row too, for readers of the model (the web UI's upload log).
        job.problems = collect_problems(job, files, include_pending=True)
        job.state = JobState.SUCCEEDED
        job.progress = 1.0
        job.finished_at = timezone.now()
        job.error = ""
        job.save(
            update_fields=[
                *("summary", "problems", "state", "progress"),
                *("finished_at", "error", "updated_at"),
            ]
        )
    return True


def job_totals(job: IngestJob, files: list[UploadFile]) -> dict[str, int]:
    """What the job's runs hold now (recomputed, so a re-run never double counts)."""
    run_ids = sorted({f.run_id for f in files if f.run_id is not None})
    points = Series.objects.filter(run_id__in=run_ids).aggregate(n=Sum("count"))["n"] or 0
    media = {
        "images": Image.objects.filter(run_id__in=run_ids).aggregate(n=Count("pk"))["n"],
        "histograms": Histogram.objects.filter(run_id__in=run_ids).aggregate(n=Count("pk"))["n"],
        "texts": TextEntry.objects.filter(run_id__in=run_ids).aggregate(n=Count("pk"))["n"],
    }
    skipped = sum(
        len((f.parse_state or {}).get("problems", [])) + (1 if _pending(f) else 0) for f in files
    )
    return {"runs": len(run_ids), "points": int(points), **media, "skipped_records": skipped}


def _pending(f: UploadFile) -> dict[str, Any] | None:
    return (f.parse_state or {}).get("pending")


@dataclass
class JobHeartbeat:
    """Keeps `updated_at` fresh while parsing so the reconciler leaves live jobs alone."""

    job_id: int
    every: float = 15.0
    _last: float = 0.0

    def beat(self) -> None:
        import time

        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            IngestJob.objects.filter(pk=self.job_id).update(updated_at=timezone.now())

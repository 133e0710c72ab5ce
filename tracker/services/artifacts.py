"""Artifact uploads: presigned S3 multipart (bytes never pass through the web tier) or chunked
through the API on a local blob directory; both end in a content-addressed blob.

The client declares size and sha256 up front; `complete_artifact` verifies both against the
bytes actually received before the row points at a blob, so a truncated or corrupted upload
can never become "ready". The artifact path is a label only (normalised, no traversal): it
never becomes a storage location.

No cross-run de-duplication by declared hash: answering "ready" to anyone who merely names a
sha256 would let them claim (and then download) another tenant's file.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..ingest.logdir import unsafe_segment
from ..models import Artifact, ArtifactState, Blob, Run
from ..storage import CHUNK, BlobStore, LocalBlobStore, S3BlobStore, get_blob_store
from .errors import Conflict, ServiceError, TooLarge

MAX_SIZE = 5 * 1024**4  # S3's largest object
MIN_PART = 8 * 1024 * 1024
MAX_PARTS = 10_000
CHUNK_SIZE = 8 * 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STALE_AFTER = timedelta(hours=24)
_HEX = set("0123456789abcdef")


def normalize_path(raw: Any) -> str:
    """A clean relative POSIX path: no empty, '.', '..' (in any encoding) or control chars."""
    if not isinstance(raw, str) or not raw.strip():
        raise ServiceError("path is a non-empty relative file path.", field="path")
    path = raw.replace("\\", "/").strip()
    if len(path) > 1024:
        raise ServiceError("path is at most 1024 characters.", field="path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ServiceError("path cannot contain control characters.", field="path")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise ServiceError("path must be relative.", field="path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts:
        # '..' in any encoding: percent-encoded, NFKC look-alikes (one-dot leaders, fullwidth
        # dots and solidus), encoded separators.
        if part == ".." or unsafe_segment(part):
            raise ServiceError("path cannot contain '..' segments.", field="path")
    if not parts:
        raise ServiceError("path is a non-empty relative file path.", field="path")
    return posixpath.join(*parts)


def check_sha256(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw) != 64 or not set(raw.lower()) <= _HEX:
        raise ServiceError("sha256 is 64 hex digits.", field="sha256")
    return raw.lower()


def check_size(raw: Any) -> int:
    if type(raw) is not int or raw < 0:
        raise ServiceError("size is a non-negative integer (bytes).", field="size")
    if raw > MAX_SIZE:
        raise TooLarge("Artifacts are at most 5 TiB.", field="size")
    return raw


def part_size_for(size: int) -> int:
    """8 MiB parts, larger (whole MiB) when 10,000 parts would not cover the file."""
    need = math.ceil(size / MAX_PARTS) if size else MIN_PART
    return max(MIN_PART, math.ceil(need / (1024 * 1024)) * 1024 * 1024)


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def upload_mode(store: BlobStore | None = None) -> str:
    store = store or get_blob_store()
    return "s3-multipart" if isinstance(store, S3BlobStore) else "chunked"


# --- local part files (chunked mode) -----------------------------------------------------------


def _part_path(artifact: Artifact) -> Path:
    store = get_blob_store()
    if not isinstance(store, LocalBlobStore):
        raise ServiceError("Chunked uploads are for a local blob store.", code="wrong_mode")
    directory = store.root / "uploads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"artifact-{artifact.pk}.part"


def _drop_upload(artifact: Artifact) -> None:
    """Abort whatever partial upload the row holds (best effort: S3 may have expired it)."""
    store = get_blob_store()
    if isinstance(store, S3BlobStore):
        key = artifact.metadata.get("upload_key")
        if artifact.upload_id and key:
            try:
                store.abort_multipart(key, artifact.upload_id)
            except Exception:  # noqa: BLE001, S110 - already completed/aborted/expired
                pass
    elif isinstance(store, LocalBlobStore):
        try:
            _part_path(artifact).unlink()
        except FileNotFoundError:
            pass
    artifact.upload_id = ""
    artifact.bytes_received = 0
    artifact.metadata.pop("upload_key", None)


def _mark_ready(artifact: Artifact, sha256: str, size: int) -> Artifact:
    blob, _ = Blob.objects.get_or_create(
        sha256=sha256, defaults={"size": size, "mime": "application/octet-stream"}
    )
    artifact.blob = blob
    artifact.state = ArtifactState.READY
    artifact.upload_id = ""
    artifact.bytes_received = size
    artifact.metadata.pop("upload_key", None)
    artifact.save()
    return artifact


def _upload_instructions(artifact: Artifact) -> dict[str, Any]:
    store = get_blob_store()
    if isinstance(store, S3BlobStore):
        psize = part_size_for(artifact.size)
        n = part_count(artifact.size, psize)
        key, upload_id = artifact.metadata["upload_key"], artifact.upload_id
        return {
            "mode": "s3-multipart",
            "part_size": psize,
            "parts": [
                {"number": i, "url": store.presign_part(key, upload_id, i)} for i in range(1, n + 1)
            ],
        }
    return {"mode": "chunked", "chunk_size": CHUNK_SIZE, "offset": artifact.bytes_received}


def create_artifact(
    run: Run, *, path: Any, size: Any, sha256: Any
) -> tuple[Artifact, dict[str, Any] | None]:
    """Start (or resume) an upload; returns the row and upload instructions (None if ready).

    Same path + same content already ready: nothing to upload. Same path, other content
    ready: 409 (an artifact is never silently replaced). A pending upload of the same file is
    resumed (same S3 multipart upload id, or the chunked offset); of another file, restarted.
    """
    path = normalize_path(path)
    size = check_size(size)
    sha256 = check_sha256(sha256)
    store = get_blob_store()
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().filter(run=run, path=path).first()
        if artifact is None:
            try:
                with transaction.atomic():
                    artifact = Artifact.objects.create(run=run, path=path, size=size, sha256=sha256)
            except IntegrityError:
                artifact = Artifact.objects.select_for_update().get(run=run, path=path)
        if artifact.state == ArtifactState.READY:
            if artifact.sha256 == sha256 and artifact.size == size:
                return artifact, None
            raise Conflict(
                f"An artifact {path!r} with different content exists in this run; "
                "log it under another path.",
                field="path",
                code="artifact_exists",
            )
        same_file = artifact.sha256 == sha256 and artifact.size == size
        if size == 0:
            if sha256 != EMPTY_SHA256:
                raise ServiceError(
                    "An empty file has sha256 " + EMPTY_SHA256,
                    field="sha256",
                    code="checksum_mismatch",
                )
            _drop_upload(artifact)
            store.put_bytes(b"")
            artifact.size, artifact.sha256 = size, sha256
            return _mark_ready(artifact, sha256, 0), None
        if isinstance(store, S3BlobStore):
            if same_file and artifact.upload_id and artifact.metadata.get("upload_key"):
                # Resume: the parts the client already PUT stay valid under this upload id.
                return artifact, _upload_instructions(artifact)
            _drop_upload(artifact)
            key = store.upload_key(f"artifact-{artifact.pk}-{uuid.uuid4().hex}")
            artifact.upload_id = store.create_multipart(key)
            artifact.metadata["upload_key"] = key
        elif not same_file:
            _drop_upload(artifact)
        artifact.size, artifact.sha256 = size, sha256
        artifact.save()
        return artifact, _upload_instructions(artifact)


def receive_chunk(artifact_id: int, offset: Any, data: bytes) -> int:
    """Append bytes at `offset` of a chunked upload; returns the new total received."""
    try:
        offset = int(offset)
    except (TypeError, ValueError):
        raise ServiceError("offset is a non-negative integer.", field="offset") from None
    if offset < 0:
        raise ServiceError("offset is a non-negative integer.", field="offset")
    if len(data) > CHUNK_SIZE:
        raise TooLarge(f"Chunks are at most {CHUNK_SIZE} bytes.", field="body")
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().get(pk=artifact_id)
        if artifact.state != ArtifactState.PENDING:
            raise Conflict("This artifact is complete already.", code="not_pending")
        if upload_mode() != "chunked":
            raise ServiceError("This artifact uploads by presigned S3 parts.", code="wrong_mode")
        if offset != artifact.bytes_received:
            raise Conflict(
                f"Expected offset {artifact.bytes_received}, got {offset}.",
                code="offset_mismatch",
                field="offset",
                expected_offset=artifact.bytes_received,
            )
        end = offset + len(data)
        if end > artifact.size:
            raise ServiceError(
                f"The upload would exceed the declared size ({artifact.size} bytes).",
                field="body",
                code="size_mismatch",
            )
        fd = os.open(_part_path(artifact), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, offset)
            os.ftruncate(fd, end)  # drop bytes of an earlier attempt past this point
            os.fsync(fd)  # the acknowledged offset must survive a crash
        finally:
            os.close(fd)
        artifact.bytes_received = end
        artifact.save(update_fields=["bytes_received", "updated_at"])
    return end


# S3 ETags are short printable ASCII (a quoted hex digest); anything else never came from S3
# and some S3-compatible servers answer it with a 500 instead of InvalidPart.
_ETAG = re.compile(r"[\x21-\x7e]{1,256}")


def _check_parts(raw: Any, expected: int) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ServiceError("parts is a list of {number, etag}.", field="parts")
    parts: dict[int, str] = {}
    for i, p in enumerate(raw):
        if (
            not isinstance(p, dict)
            or type(p.get("number")) is not int
            or not isinstance(p.get("etag"), str)
            or not _ETAG.fullmatch(p["etag"])
        ):
            raise ServiceError(
                "Each part is {number: int, etag: str} with the ETag S3 returned for it.",
                field=f"parts[{i}]",
            )
        if p["number"] in parts:
            raise ServiceError(f"Part {p['number']} is listed twice.", field=f"parts[{i}]")
        parts[p["number"]] = p["etag"]
    if sorted(parts) != list(range(1, expected + 1)):
        raise ServiceError(
            f"parts must list each of the {expected} part numbers once.",
            field="parts",
            code="upload_incomplete",
        )
    return [{"number": n, "etag": parts[n]} for n in sorted(parts)]


class _Refused(Exception):
    """Carries a refusal out of the transaction so that the clean-up before it commits."""

    def __init__(self, error: ServiceError) -> None:
        self.error = error


def _refuse(artifact: Artifact, message: str, code: str) -> None:
    """Forget the bad upload (the client starts again) and refuse."""
    _drop_upload(artifact)
    artifact.save()
    field = "size" if code == "size_mismatch" else "sha256"
    raise _Refused(ServiceError(message, field=field, code=code))


def complete_artifact(artifact_id: int, parts: Any = None) -> Artifact:
    """Verify size and sha256 of what was received and adopt it under its content address.

    Completing a ready artifact again is a no-op (a retry after a lost response).
    """
    store = get_blob_store()
    # The failure paths commit their clean-up (the upload is gone) before raising.
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().get(pk=artifact_id)
        if artifact.state == ArtifactState.READY:
            return artifact
        try:
            if isinstance(store, S3BlobStore):
                return _complete_s3(store, artifact, parts)
            return _complete_chunked(store, artifact)
        except _Refused as refused:
            error = refused.error
    raise error


def _complete_s3(store: S3BlobStore, artifact: Artifact, parts: Any) -> Artifact:
    from botocore.exceptions import ClientError

    key = artifact.metadata.get("upload_key")
    if not artifact.upload_id or not key:
        raise ServiceError("No upload in progress; create the artifact again.", code="no_upload")
    expected = part_count(artifact.size, part_size_for(artifact.size))
    checked = _check_parts(parts, expected)
    try:
        store.complete_multipart(key, artifact.upload_id, checked)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise  # S3 failing (after boto3's retries): a 503 the client retries, not its fault
        if code == "NoSuchUpload":
            _refuse(artifact, "The upload expired or was aborted; start again.", "no_upload")
        raise ServiceError(
            f"S3 refused to assemble the parts ({code or 'error'}); re-upload the listed parts.",
            field="parts",
            code="upload_incomplete",
        ) from None
    artifact.upload_id = ""  # completed: nothing left to abort
    actual = int(store.client.head_object(Bucket=store.bucket, Key=key)["ContentLength"])
    if actual != artifact.size:
        store.client.delete_object(Bucket=store.bucket, Key=key)
        _refuse(artifact, f"Received {actual} bytes, declared {artifact.size}.", "size_mismatch")
    ref = store.adopt_upload(key)
    if ref.sha256 != artifact.sha256:
        if not Blob.objects.filter(sha256=ref.sha256).exists():
            store.delete(ref.sha256)
        _refuse(
            artifact, "The uploaded bytes do not match the declared sha256.", "checksum_mismatch"
        )
    return _mark_ready(artifact, ref.sha256, ref.size)


def _complete_chunked(store: BlobStore, artifact: Artifact) -> Artifact:
    if artifact.bytes_received != artifact.size:
        raise ServiceError(
            f"Received {artifact.bytes_received} of {artifact.size} bytes; send the rest first.",
            code="upload_incomplete",
            expected_offset=artifact.bytes_received,
        )
    part = _part_path(artifact)
    digest = hashlib.sha256()
    with open(part, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != artifact.sha256:
        _refuse(
            artifact, "The uploaded bytes do not match the declared sha256.", "checksum_mismatch"
        )
    with open(part, "rb") as fh:
        ref = store.put_stream(fh)
    part.unlink()
    return _mark_ready(artifact, ref.sha256, ref.size)


def cleanup_stale_uploads(older_than: timedelta = STALE_AFTER) -> int:
    """Abort multipart uploads / drop part files of pending artifacts untouched for a day.

    The rows stay (pending): a client that comes back creates the artifact again and restarts.
    """
    cutoff = timezone.now() - older_than
    count = 0
    for artifact in Artifact.objects.filter(state=ArtifactState.PENDING, updated_at__lt=cutoff):
        with transaction.atomic():
            locked = Artifact.objects.select_for_update(skip_locked=True).filter(pk=artifact.pk)
            row = locked.first()
            if row is None or row.state != ArtifactState.PENDING:
                continue
            if not row.upload_id and not row.bytes_received:
                continue
            _drop_upload(row)
            row.save()
            count += 1
    return count

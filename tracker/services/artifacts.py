"""Artifact uploads: presigned S3 multipart (bytes never pass through the web tier) or chunked
through the API on a local blob directory; both end in a content-addressed blob.

The client declares the size up front and the sha256 either up front too or, so that it can hash
a large file while sending it, when it completes the upload (then each S3 part's URL is asked
for as the part's CRC32 becomes known, `presign_parts`). Either way the server verifies both
against the bytes actually received before the row points at a blob, so a truncated or
corrupted upload can never become "ready" and no client can make `blobs/<sha>` (shared by
every tenant through de-duplication) hold anything but that sha's bytes. The artifact path is
a label only (normalised, no traversal): it never becomes a storage location.

Verifying means re-reading the whole object (seconds per GB on S3). `complete_artifact` does it
in the request for small uploads and for the chunked mode; a large S3 upload is checked by the
worker instead (`verify_upload`): complete answers "verifying" as soon as S3 has assembled the
parts and their total size is right, the artifact is downloadable from its upload key meanwhile,
then the worker makes it "ready" (hash matches: copied to its content address) or "failed"
(bytes deleted, reason in metadata["error"]; creating it again restarts the upload).

So that a transfer error surfaces while the client can still resend, a client may declare each
part's CRC32: they are signed into the part URLs and S3 refuses a part whose bytes differ. They
only guard the transfer; the content address is never derived from anything the client says.

No cross-run de-duplication by declared hash: answering "ready" to anyone who merely names a
sha256 would let them claim (and then download) another tenant's file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..ingest.logdir import unsafe_segment
from ..models import Artifact, ArtifactState, Blob, Run
from ..storage import CHUNK, BlobRef, BlobStore, LocalBlobStore, S3BlobStore, get_blob_store
from .errors import Conflict, ServiceError, TooLarge
from .jobs import dispatch

MAX_SIZE = 5 * 1024**4  # S3's largest object
MIN_PART = 8 * 1024 * 1024
MAX_PARTS = 10_000
CHUNK_SIZE = 8 * 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STALE_AFTER = timedelta(hours=24)
# A verification not heard of for this long lost its Celery message (Redis keeps nothing on
# disk): send it again. A running one touches the row every HEARTBEAT seconds.
VERIFY_STALE_AFTER = timedelta(minutes=10)
HEARTBEAT = 30.0
MISMATCH = "The uploaded bytes do not match the declared sha256."
NO_UPLOAD = "No upload in progress; create the artifact again."
# What an artifact's metadata holds about its upload in progress, gone once it ends.
UPLOAD_METADATA = ("upload_key", "part_crc32", "deferred")
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


def check_part_checksums(raw: Any, size: int) -> list[str] | None:
    """The client's CRC32 of each part, for S3 to check every part PUT against (transit
    integrity, as the AWS SDKs do by default); None when not given.

    `{"algorithm": "crc32", "part_size": int, "values": ["<base64 of the big-endian CRC32>"]}`,
    computed over `part_size_for(size)` parts. Declared over other parts (a client that planned
    differently), they are ignored: the upload then goes without. Whatever they say, the server
    still checks the sha256 of the whole object itself.
    """
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or raw.get("algorithm") != "crc32"
        or type(raw.get("part_size")) is not int
        or not isinstance(raw.get("values"), list)
    ):
        raise ServiceError(
            'part_checksums is {"algorithm": "crc32", "part_size": int, "values": [base64]}.',
            field="part_checksums",
        )
    psize = part_size_for(size)
    if raw["part_size"] != psize or size == 0:
        return None
    values = raw["values"]
    if len(values) != part_count(size, psize) or not all(_is_crc32(v) for v in values):
        raise ServiceError(
            f"part_checksums.values lists one base64 CRC32 per {psize}-byte part.",
            field="part_checksums",
        )
    return values


def _is_crc32(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 8:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 4
    except (binascii.Error, ValueError):
        return False


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
    _forget(artifact, *UPLOAD_METADATA)


def _forget(artifact: Artifact, *names: str) -> None:
    for name in names:
        artifact.metadata.pop(name, None)


def _mark_ready(artifact: Artifact, sha256: str, size: int) -> Artifact:
    blob, _ = Blob.objects.get_or_create(
        sha256=sha256, defaults={"size": size, "mime": "application/octet-stream"}
    )
    artifact.blob = blob
    artifact.state = ArtifactState.READY
    artifact.upload_id = ""
    artifact.bytes_received = size
    _forget(artifact, *UPLOAD_METADATA, "error")
    artifact.save()
    return artifact


def _upload_instructions(artifact: Artifact) -> dict[str, Any]:
    store = get_blob_store()
    if isinstance(store, S3BlobStore):
        psize = part_size_for(artifact.size)
        n = part_count(artifact.size, psize)
        key, upload_id = artifact.metadata["upload_key"], artifact.upload_id
        crcs: list[str | None] = artifact.metadata.get("part_crc32") or []
        parts = []
        if not artifact.metadata.get("deferred"):  # deferred: URLs come from presign_parts
            parts = [_signed_part(store, key, upload_id, i, crcs[i - 1] if crcs else None)
                     for i in range(1, n + 1)]  # fmt: skip
        return {
            "mode": "s3-multipart",
            "part_size": psize,
            "checksum": "crc32" if crcs else None,
            "upload_id": upload_id,
            "parts": parts,
        }
    return {"mode": "chunked", "chunk_size": CHUNK_SIZE, "offset": artifact.bytes_received}


def _signed_part(
    store: S3BlobStore, key: str, upload_id: str, number: int, crc32: str | None
) -> dict[str, Any]:
    part: dict[str, Any] = {
        "number": number,
        "url": store.presign_part(key, upload_id, number, crc32),
    }
    if crc32:
        part["headers"] = {"x-amz-checksum-crc32": crc32}  # signed into the URL
    return part


def create_artifact(
    run: Run, *, path: Any, size: Any, sha256: Any = None, part_checksums: Any = None
) -> tuple[Artifact, dict[str, Any] | None]:
    """Start (or resume) an upload; returns the row and upload instructions (None if ready).

    Same path + same content already ready (or uploaded and being verified): nothing to upload.
    Same path, other content: 409 (an artifact is never silently replaced). A pending upload of
    the same file is resumed (same S3 multipart upload id, or the chunked offset); of another
    file, restarted. A failed one (its bytes did not match) starts again from scratch.

    Without `sha256` the hash is declared at `complete_artifact` ("deferred"): the client hashes
    while it sends. The server cannot then tell whether a ready artifact of the same size holds
    the same content, so it answers that artifact (its sha256 included) for the client to
    compare; a pending deferred upload of the same size is resumed, and the client decides from
    its own records which parts still hold its file's bytes (the sha256 check at the end
    catches any mistake).
    """
    path = normalize_path(path)
    size = check_size(size)
    deferred = sha256 is None
    if deferred and part_checksums is not None:
        raise ServiceError(
            "Without sha256, give each part's CRC32 when asking for its URL (.../parts/).",
            field="part_checksums",
        )
    sha256 = "" if deferred else check_sha256(sha256)
    if deferred and size == 0:
        sha256, deferred = EMPTY_SHA256, False
    crcs = check_part_checksums(part_checksums, size)
    store = get_blob_store()
    checksums = isinstance(store, S3BlobStore) and store.part_checksums
    if not checksums:
        crcs = None
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().filter(run=run, path=path).first()
        if artifact is None:
            try:
                with transaction.atomic():
                    artifact = Artifact.objects.create(run=run, path=path, size=size, sha256=sha256)
            except IntegrityError:
                artifact = Artifact.objects.select_for_update().get(run=run, path=path)
        if artifact.state in (ArtifactState.READY, ArtifactState.VERIFYING):
            if artifact.size == size and (deferred or artifact.sha256 == sha256):
                return artifact, None
            raise Conflict(
                f"An artifact {path!r} with different content exists in this run; "
                "log it under another path.",
                field="path",
                code="artifact_exists",
            )
        if artifact.state == ArtifactState.FAILED:
            artifact.state = ArtifactState.PENDING
            artifact.metadata.pop("error", None)
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
            resumable = (
                bool(artifact.metadata.get("deferred"))
                if deferred
                else artifact.metadata.get("part_crc32") == crcs
            )
            if (
                same_file
                and artifact.upload_id
                and artifact.metadata.get("upload_key")
                and resumable
            ):
                # Resume: the parts the client already PUT stay valid under this upload id.
                return artifact, _upload_instructions(artifact)
            _drop_upload(artifact)
            key = store.upload_key(f"artifact-{artifact.pk}-{uuid.uuid4().hex}")
            with_crc = bool(crcs) or (deferred and checksums)
            artifact.upload_id = store.create_multipart(key, crc32=with_crc)
            artifact.metadata["upload_key"] = key
            if deferred:
                artifact.metadata["deferred"] = True
                if with_crc:
                    n = part_count(size, part_size_for(size))
                    artifact.metadata["part_crc32"] = [None] * n
            elif crcs:
                artifact.metadata["part_crc32"] = crcs
        elif not same_file:
            _drop_upload(artifact)
        artifact.size, artifact.sha256 = size, sha256
        artifact.save()
        return artifact, _upload_instructions(artifact)


MAX_PRESIGN = 1_000


def presign_parts(artifact_id: int, raw: Any) -> list[dict[str, Any]]:
    """Presigned URLs for some parts of a pending S3 upload, `[{"number", "crc32"?}]` → `[{"number",
    "url", "headers"?}]`. An upload started with checksums signs each part's CRC32 into its URL
    (given here for a deferred upload, where the latest one given for a part counts; fixed at
    creation otherwise). Lets a client hash part k while part k-1 is on its way."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PRESIGN:
        raise ServiceError(
            f"parts is a list of 1 to {MAX_PRESIGN} {{number, crc32?}}.", field="parts"
        )
    store = get_blob_store()
    if not isinstance(store, S3BlobStore):
        raise ServiceError("This artifact uploads in chunks through the API.", code="wrong_mode")
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().get(pk=artifact_id)
        if artifact.state != ArtifactState.PENDING:
            raise Conflict("This artifact is complete already.", code="not_pending")
        key = artifact.metadata.get("upload_key")
        if not artifact.upload_id or not key:
            raise ServiceError(NO_UPLOAD, code="no_upload")
        n = part_count(artifact.size, part_size_for(artifact.size))
        crcs: list[str | None] | None = artifact.metadata.get("part_crc32")
        deferred = bool(artifact.metadata.get("deferred"))
        wanted: list[tuple[int, str | None]] = []
        for i, p in enumerate(raw):
            number = p.get("number") if isinstance(p, dict) else None
            if type(number) is not int or not 1 <= number <= n:
                raise ServiceError(f"number is a part number from 1 to {n}.", field=f"parts[{i}]")
            crc = p.get("crc32")
            if crcs and deferred:
                if not _is_crc32(crc):
                    raise ServiceError(
                        "crc32 (base64 of the part's big-endian CRC32) is required: this upload "
                        "checks every part.",
                        field=f"parts[{i}].crc32",
                    )
                crcs[number - 1] = crc
            wanted.append((number, crcs[number - 1] if crcs else None))
        if crcs and deferred:
            artifact.metadata["part_crc32"] = crcs
            artifact.save(update_fields=["metadata", "updated_at"])
    return [_signed_part(store, key, artifact.upload_id, number, crc) for number, crc in wanted]


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


def complete_artifact(artifact_id: int, parts: Any = None, sha256: Any = None) -> Artifact:
    """Check what was received and adopt it under its content address ("ready"), or, for a
    large S3 upload, hand the sha256 check to the worker ("verifying"; see `verify_upload`).

    `sha256` is required here when it was not declared at creation, and must agree if it was.
    Completing a ready or verifying artifact again is a no-op (a retry after a lost response).
    """
    store = get_blob_store()
    # The failure paths commit their clean-up (the upload is gone) before raising.
    with transaction.atomic():
        artifact = Artifact.objects.select_for_update().get(pk=artifact_id)
        if artifact.state in (ArtifactState.READY, ArtifactState.VERIFYING):
            return artifact
        if sha256 is None and not artifact.sha256:
            raise ServiceError(
                "sha256 is required: it was not declared when the artifact was created.",
                field="sha256",
            )
        if sha256 is not None:
            declared = check_sha256(sha256)
            if artifact.sha256 and declared != artifact.sha256:
                raise ServiceError(
                    "sha256 differs from the one declared when the artifact was created.",
                    field="sha256",
                    code="checksum_mismatch",
                )
            artifact.sha256 = declared
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
        raise ServiceError(NO_UPLOAD, code="no_upload")
    expected = part_count(artifact.size, part_size_for(artifact.size))
    checked = _check_parts(parts, expected)
    crcs = artifact.metadata.get("part_crc32")
    if crcs and None in crcs:
        raise ServiceError(
            f"Part {crcs.index(None) + 1} was never signed: ask for its URL with its CRC32.",
            field="parts",
            code="upload_incomplete",
        )
    try:
        store.complete_multipart(
            key, artifact.upload_id, checked, artifact.metadata.get("part_crc32")
        )
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
    # S3 checked the CRC32s part by part; the key stays, for the sha256 check.
    _forget(artifact, "part_crc32", "deferred")
    actual = int(store.client.head_object(Bucket=store.bucket, Key=key)["ContentLength"])
    if actual != artifact.size:
        store.delete_key(key)
        _refuse(artifact, f"Received {actual} bytes, declared {artifact.size}.", "size_mismatch")
    if artifact.size <= settings.TRACKER_ARTIFACT_VERIFY_INLINE_MAX or (
        settings.CELERY_TASK_ALWAYS_EAGER
    ):
        ref, etag = store.hash_object(key)
        if ref.sha256 == artifact.sha256:
            store.adopt_object(key, ref, etag)
        store.delete_key(key)
        if ref.sha256 != artifact.sha256:
            _refuse(artifact, MISMATCH, "checksum_mismatch")
        return _mark_ready(artifact, ref.sha256, ref.size)
    # Large: the client is done once S3 holds the bytes; the worker re-reads them.
    from ..tasks_media import verify_artifact

    artifact.state = ArtifactState.VERIFYING
    artifact.save()
    dispatch(verify_artifact, artifact.pk)  # on commit: the worker must see "verifying"
    return artifact


def verify_upload(artifact_id: int) -> str | None:
    """Worker side of a large S3 upload: hash what S3 assembled; adopt it or fail the artifact.

    Returns the resulting state (None: nothing to do). Idempotent: a duplicate or re-sent
    message finds the row no longer verifying, or the upload key gone, and does nothing. The
    hash is computed outside any transaction (it may take minutes); the row is locked only to
    record the outcome.
    """
    from botocore.exceptions import ClientError

    store = get_blob_store()
    artifact = Artifact.objects.filter(pk=artifact_id, state=ArtifactState.VERIFYING).first()
    if artifact is None or not isinstance(store, S3BlobStore):
        return None
    key = artifact.metadata.get("upload_key", "")
    ref: BlobRef | None = None
    etag = ""
    try:
        if key:
            ref, etag = store.hash_object(key, heartbeat=_heartbeat(artifact.pk))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"NoSuchKey", "404"}:
            raise  # S3 failing: the task is retried (and re-sent if it stays stale)
    good = ref is not None and ref.sha256 == artifact.sha256 and ref.size == artifact.size
    if ref is not None and good:
        # Only the bytes just hashed (CopySourceIfMatch) reach the shared content address.
        store.adopt_object(key, ref, etag)
    with transaction.atomic():
        row = Artifact.objects.select_for_update().filter(pk=artifact_id).first()
        if row is None or row.state != ArtifactState.VERIFYING:
            state = None  # a duplicate finished first, or the run was deleted
        elif row.metadata.get("upload_key") != key:
            state = None  # cannot happen while verifying; never touch another upload's row
        elif ref is not None and good:
            state = _mark_ready(row, ref.sha256, ref.size).state
        else:
            row.state = state = ArtifactState.FAILED
            row.metadata.pop("upload_key", None)
            row.metadata["error"] = (
                {"code": "checksum_mismatch", "message": MISMATCH}
                if ref is not None
                else {"code": "upload_lost", "message": "The uploaded object is gone."}
            )
            row.save()
    # Only once the row no longer points at it: until then a download of the verifying artifact
    # reads it, and a duplicate of this task that finds it gone must find the row settled too.
    if key:
        store.delete_key(key)
    return state


def _heartbeat(artifact_id: int) -> Callable[[], None]:
    """Touch the row every HEARTBEAT seconds while hashing, so it never looks lost."""
    last = time.monotonic()

    def beat() -> None:
        nonlocal last
        if time.monotonic() - last >= HEARTBEAT:
            last = time.monotonic()
            Artifact.objects.filter(pk=artifact_id, state=ArtifactState.VERIFYING).update(
                updated_at=timezone.now()
            )

    return beat


def reconcile_verifications(stale_after: timedelta = VERIFY_STALE_AFTER) -> int:
    """Send the verification of artifacts stuck in "verifying" again (lost message, dead worker)."""
    from ..tasks_media import verify_artifact

    cutoff = timezone.now() - stale_after
    stale = list(
        Artifact.objects.filter(state=ArtifactState.VERIFYING, updated_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    Artifact.objects.filter(pk__in=stale).update(updated_at=timezone.now())
    for pk in stale:
        dispatch(verify_artifact, pk)
    return len(stale)


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
        _refuse(artifact, MISMATCH, "checksum_mismatch")
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

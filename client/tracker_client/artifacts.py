"""Artifact upload (presigned S3 multipart or chunked through the API) and download.

Uploads run on a background worker so `log_artifact()` returns at once; `finish()` waits for
them. Large files are never read whole, and are hashed while they are sent: the sha256 runs over
the file part by part just ahead of the parallel part uploads, each part's URL is asked for with
its CRC32 (S3 checks the part against it on arrival; a damaged part is sent again), and the
sha256 is declared when the upload completes. S3 parts are streamed from the file with an
explicit Content-Length, and the parts already uploaded are remembered in a small state file
(keyed by the file's size, mtime and inode) so a re-run after a crash only sends what is
missing. Files of one part or less are hashed first and declared up front instead: one request
fewer, and the server recognises an artifact it already has. If the
server cannot be reached, the artifact is journaled as a reference (local path, size, sha256)
and uploaded by `tracker sync` later, provided the file is still unchanged.

An upload is done once the object store holds the bytes. The server checks their sha256 before
the artifact becomes "ready"; for a large S3 upload it does so in the background ("verifying"),
so the client does not wait on that re-read. A file changed while it was being sent would fail
that check, so the client compares the file's size and mtime before hashing and after sending
and does not complete such an upload; `wait_verified` reports the server's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ._threads import WorkerPool, parallel_map
from .config import cache_dir
from .http import ApiError, HttpClient, RetryPolicy, TrackerUnreachable, retry_call
from .records import ARTIFACT, Record

logger = logging.getLogger("tracker_client")

HASH_CHUNK = 4 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024
MAX_CHUNK = 64 * 1024 * 1024  # cap on the server's chunk_size: one chunk is held in memory
PART_RETRY = RetryPolicy(max_attempts=8, max_elapsed=600.0, base=1.0, cap=30.0)
DEFAULT_WORKERS = 6
# Completing assembles the parts on S3 and, for small artifacts, re-reads them to verify the
# sha256 in the request: allow far more than the usual read timeout.
COMPLETE_TIMEOUT = httpx.Timeout(900.0, connect=10.0)
UPLOADED = ("ready", "verifying")  # nothing left to send

ProgressFn = Callable[[int], None]


MIN_PART = 8 * 1024 * 1024
MAX_PARTS = 10_000
STREAM_MIN = MIN_PART  # larger files are hashed while they are sent
BAD_DIGEST_ATTEMPTS = 3  # a part S3 received corrupted is sent again, a few times


class ArtifactError(Exception):
    """The artifact could not be uploaded/downloaded as asked (changed file, bad checksum)."""


def part_size_for(size: int) -> int:
    """The server's S3 part size for a file of `size` bytes (docs/api-contract.md): 8 MiB,
    larger (whole MiB) when 10,000 parts would not cover the file."""
    need = math.ceil(size / MAX_PARTS) if size else MIN_PART
    return max(MIN_PART, math.ceil(need / (1024 * 1024)) * 1024 * 1024)


FileSignature = tuple[int, int, int, int]


def file_signature(path: Path) -> FileSignature:
    """What changes when a file is written to: (size, mtime ns, inode, device)."""
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class FileDigest:
    """What the client declares of a file: sha256 and size, the CRC32 of each S3 part (S3
    checks every part against it), and the file's signature from before it was read."""

    sha256: str
    size: int
    signature: FileSignature
    part_size: int
    part_crc32: tuple[str, ...]

    def part_checksums(self) -> dict[str, Any] | None:
        if not self.part_crc32:
            return None
        return {"algorithm": "crc32", "part_size": self.part_size, "values": list(self.part_crc32)}


def digest_file(path: Path, progress: ProgressFn | None = None) -> FileDigest:
    """One streaming pass: sha256 of the file and CRC32 of each part (both release the GIL)."""
    signature = file_signature(path)
    part_size = part_size_for(signature[0])
    digest = hashlib.sha256()
    crcs: list[str] = []
    size = crc = in_part = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(min(HASH_CHUNK, part_size - in_part)):
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            in_part += len(chunk)
            if in_part == part_size:
                crcs.append(_crc32_b64(crc))
                crc = in_part = 0
            if progress is not None:
                progress(len(chunk))
    if in_part:
        crcs.append(_crc32_b64(crc))
    return FileDigest(digest.hexdigest(), size, signature, part_size, tuple(crcs))


def _crc32_b64(crc: int) -> str:
    """S3's encoding of a CRC32 checksum: base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def normalize_remote_path(path: str) -> str:
    """Artifact path as the server wants it: relative, forward slashes, no `.`/`..` parts."""
    text = str(path).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"invalid artifact path {path!r}: must be relative and without '..'")
    normalized = "/".join(parts)
    if len(normalized) > 1024:
        raise ValueError("artifact path longer than 1024 characters")
    return normalized


def plan_artifact(path: str | os.PathLike[str], name: str | None = None) -> list[tuple[Path, str]]:
    """(local file, remote path) pairs for a file or every file under a directory.

    Without a name a file keeps the relative path it was given (`checkpoints/epoch10.pt`), or its
    base name when the path is absolute or climbs out of the working directory; a directory uses
    its own base name as prefix.
    """
    local = Path(path)
    if local.is_dir():
        prefix = normalize_remote_path(name or local.resolve().name)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        return [(p, f"{prefix}/{PurePosixPath(*p.relative_to(local).parts)}") for p in files]
    if not local.is_file():
        raise FileNotFoundError(f"artifact not found: {local}")
    if name is not None:
        return [(local, normalize_remote_path(name))]
    try:
        default = normalize_remote_path(str(path)) if not local.is_absolute() else local.name
    except ValueError:
        default = local.name
    return [(local, default)]


def _state_path(run_id: int, remote: str, content: str) -> Path:
    """Where the ETags of an upload of `content` (a sha256, or `_signature_tag`) are kept."""
    tag = hashlib.sha256(f"{run_id}:{remote}".encode()).hexdigest()[:16]
    return cache_dir() / "uploads" / f"{content[:32]}-{tag}.json"


def _signature_tag(signature: FileSignature) -> str:
    """Names the file's current content before its sha256 is known: a file written to since
    has another signature, so parts sent from its old bytes are never offered again."""
    return hashlib.sha256(repr(signature).encode()).hexdigest()


def _multipart_id(upload: dict[str, Any]) -> str:
    """The S3 multipart upload the part URLs belong to (their `uploadId`). The server may
    restart an upload (stale-upload cleanup, changed part size): ETags remembered for another
    upload id name parts that no longer exist and must not be offered to complete. The server
    says it (`upload_id`); older servers only in the part URLs."""
    if upload.get("upload_id"):
        return str(upload["upload_id"])
    parts = upload.get("parts") or []
    if not parts:
        return ""
    ids = parse_qs(urlsplit(str(parts[0].get("url", ""))).query).get("uploadId", [""])
    return ids[0]


def _load_state(path: Path, artifact_id: Any, upload_id: str) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("artifact_id") != artifact_id or data.get("upload_id", "") != upload_id:
        return {}
    return {str(k): str(v) for k, v in data.get("etags", {}).items()}


def _save_state(path: Path, artifact_id: Any, upload_id: str, etags: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    state = {"artifact_id": artifact_id, "upload_id": upload_id, "etags": etags}
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


def _file_range(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                raise ArtifactError(f"{path} shrank during upload")
            remaining -= len(chunk)
            yield chunk


def _put_part(
    http: HttpClient,
    url: str,
    path: Path,
    offset: int,
    length: int,
    headers: dict[str, str] | None = None,
) -> str:
    bad_digests = 0

    def attempt(_: int) -> str:
        nonlocal bad_digests
        try:
            response = http.plain.put(
                url,
                content=_file_range(path, offset, length),
                headers={**(headers or {}), "Content-Length": str(length)},
            )
        except Exception as exc:  # httpx transport errors
            if isinstance(exc, ArtifactError):
                raise
            raise TrackerUnreachable(url.split("?", 1)[0], exc) from exc
        if response.status_code == 400 and b"BadDigest" in response.content:
            # S3 got other bytes than the part's CRC32 says: damaged on the way (send it
            # again), or the file changed since it was hashed (then it never matches).
            bad_digests += 1
            if bad_digests >= BAD_DIGEST_ATTEMPTS:
                raise ArtifactError(f"{path}: the object store keeps receiving other bytes")
            raise TrackerUnreachable(url.split("?", 1)[0], ArtifactError("BadDigest"))
        if response.status_code >= 400:
            from .http import error_from_response

            raise error_from_response(response)
        etag = response.headers.get("ETag")
        if not etag:
            raise ArtifactError("object store answered without an ETag")
        return etag

    return retry_call(attempt, PART_RETRY)


def upload_file(
    http: HttpClient,
    run_id: int,
    local: Path,
    remote: str,
    *,
    digest: FileDigest | None = None,
    sha256: str | None = None,
    size: int | None = None,
    signature: FileSignature | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressFn | None = None,
    stream: bool | None = None,
) -> dict[str, Any]:
    """Upload one file as artifact `remote` of run `run_id`; returns the artifact, "ready" or
    (large S3 uploads) "verifying" while the server checks its sha256.

    `digest` (`digest_file`) or `sha256`/`size` may be computed beforehand; `signature` is the
    `file_signature(local)` from before hashing, so that a file changed since is not completed
    under a stale sha256. Without any of them the file is hashed while it is sent (`stream`,
    the default above STREAM_MIN bytes) or digested here first.
    """
    if digest is None and (sha256 is None or size is None):
        signature = file_signature(local)
        if stream if stream is not None else signature[0] > STREAM_MIN:
            return _upload_streaming(http, run_id, local, remote, signature, workers, progress)
        digest = digest_file(local)
    body: dict[str, Any] = {"path": remote}
    if digest is not None:
        sha256, size, signature = digest.sha256, digest.size, digest.signature
        if checksums := digest.part_checksums():
            body["part_checksums"] = checksums
    assert sha256 is not None and size is not None
    body.update(size=size, sha256=sha256)
    artifact = http.call("POST", f"/api/v1/runs/{run_id}/artifacts/", json_body=body)
    if artifact.get("state") in UPLOADED:
        if progress is not None:
            progress(size)
        return artifact
    upload = artifact.get("upload") or {}
    mode = upload.get("mode")
    if mode == "s3-multipart":
        parts = _upload_s3(
            http, artifact, upload, run_id, local, remote, sha256, size, workers, progress
        )
        done_body: dict[str, Any] = {"parts": parts}
    elif mode == "chunked":
        _upload_chunked(http, artifact, upload, local, size, progress)
        done_body = {}
    else:
        raise ArtifactError(f"server offered unknown upload mode {mode!r}")
    state_path = _state_path(run_id, remote, sha256) if mode == "s3-multipart" else None
    return _complete(http, artifact, done_body, local, remote, signature, state_path)


def _complete(
    http: HttpClient,
    artifact: dict[str, Any],
    done_body: dict[str, Any],
    local: Path,
    remote: str,
    signature: FileSignature | None,
    state_path: Path | None,
) -> dict[str, Any]:
    """Complete the upload unless the file changed while it was sent; forget its part state."""
    if signature is not None and file_signature(local) != signature:
        # What was sent may not be what was hashed: completing would only make the server's
        # check fail (in the background, after we are gone). The upload stays pending.
        raise ArtifactError(f"{local} changed while it was uploaded; log it again when written")
    done = http.call(
        "POST",
        f"/api/v1/artifacts/{artifact['id']}/complete/",
        json_body=done_body,
        timeout=COMPLETE_TIMEOUT,
    )
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    if done.get("state") not in UPLOADED:
        raise ArtifactError(f"artifact {remote!r}: {_failure(done)}")
    return done


def _upload_streaming(
    http: HttpClient,
    run_id: int,
    local: Path,
    remote: str,
    signature: FileSignature,
    workers: int,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Upload without hashing first: the sha256 is computed as the parts go out and declared
    at complete (docs/api-contract.md, "sha256 at complete")."""
    size = signature[0]
    report = progress or (lambda n: None)
    artifact = http.call(
        "POST", f"/api/v1/runs/{run_id}/artifacts/", json_body={"path": remote, "size": size}
    )
    upload = artifact.get("upload")
    if upload is None:
        # The path holds an artifact of this size already: the server cannot tell whether it
        # is this content (we never said), so it answered with its sha256 for us to compare.
        sha256 = digest_file(local, progress).sha256
        if sha256 != artifact.get("sha256"):
            raise ArtifactError(
                f"an artifact {remote!r} with different content exists in this run; "
                "log it under another path"
            )
        report(size)
        return artifact
    mode = upload.get("mode")
    state_path = None
    if mode == "s3-multipart":
        state_path = _state_path(run_id, remote, _signature_tag(signature))
        parts, sha256 = _stream_s3(http, artifact, upload, local, size, state_path, workers, report)
        done_body: dict[str, Any] = {"parts": parts, "sha256": sha256}
    elif mode == "chunked":
        done_body = {"sha256": _stream_chunked(http, artifact, upload, local, size, report)}
    else:
        raise ArtifactError(f"server offered unknown upload mode {mode!r}")
    return _complete(http, artifact, done_body, local, remote, signature, state_path)


def _stream_s3(
    http: HttpClient,
    artifact: dict[str, Any],
    upload: dict[str, Any],
    local: Path,
    size: int,
    state_path: Path,
    workers: int,
    report: ProgressFn,
) -> tuple[list[dict[str, Any]], str]:
    """Hash part k (sha256 of the file so far, CRC32 of the part) while parts < k are sent;
    returns the parts for complete and the file's sha256."""
    part_size = int(upload["part_size"])
    count = max(1, math.ceil(size / part_size))
    with_crc = upload.get("checksum") == "crc32"
    upload_id = _multipart_id(upload)
    etags = _load_state(state_path, artifact["id"], upload_id) if upload_id else {}
    digest = hashlib.sha256()
    send_part = _part_sender(http, local, state_path, artifact["id"], upload_id, etags, report)

    def hashed_parts() -> Iterator[tuple[int, int, int, str]]:
        # One sequential read: sha256 of the file, CRC32 of each part.
        with open(local, "rb") as fh:
            for number in range(1, count + 1):
                offset = (number - 1) * part_size
                length = min(part_size, size - offset)
                crc, left = 0, length
                while left:
                    chunk = fh.read(min(HASH_CHUNK, left))
                    if not chunk:
                        raise ArtifactError(f"{local} shrank during upload")
                    digest.update(chunk)
                    crc = zlib.crc32(chunk, crc)
                    left -= len(chunk)
                    report(len(chunk))
                if str(number) in etags:
                    report(length)  # sent before a crash, and the file has not changed since
                    continue
                yield number, offset, length, _crc32_b64(crc)

    def signed_parts() -> Iterator[tuple[int, int, int, dict[str, Any]]]:
        # Advanced by whichever upload thread is free (parallel_map), so hashing runs just
        # ahead of the uploads; URLs are asked for `workers` parts at a time (a round trip per
        # part cost more than hashing one).
        pending = hashed_parts()
        while batch := list(itertools.islice(pending, max(1, workers))):
            wanted = [{"number": n, **({"crc32": crc} if with_crc else {})}
                      for n, _, _, crc in batch]  # fmt: skip
            signed = http.call(
                "POST", f"/api/v1/artifacts/{artifact['id']}/parts/", json_body={"parts": wanted}
            )["parts"]
            by_number = {int(p["number"]): p for p in signed}
            for number, offset, length, _ in batch:
                yield number, offset, length, by_number[number]

    def send(item: tuple[int, int, int, dict[str, Any]]) -> None:
        number, offset, length, signed = item
        send_part(number, signed["url"], offset, length, signed.get("headers"))

    # The first failure aborts the artifact; parts already done are remembered for the retry.
    parallel_map(send, signed_parts(), workers, "tracker-part")
    return [{"number": n, "etag": etags[str(n)]} for n in range(1, count + 1)], digest.hexdigest()


def _stream_chunked(
    http: HttpClient,
    artifact: dict[str, Any],
    upload: dict[str, Any],
    local: Path,
    size: int,
    report: ProgressFn,
) -> str:
    """Send the chunks the server lacks while hashing the whole file; returns its sha256."""
    chunk_size = max(1, min(int(upload.get("chunk_size") or 8 * 1024 * 1024), MAX_CHUNK))
    sent = int(upload.get("offset") or 0)  # what the server holds (it may correct us: 409)
    report(min(sent, size))
    path = f"/api/v1/artifacts/{artifact['id']}/content"
    digest = hashlib.sha256()
    with open(local, "rb") as fh:
        hashed = 0
        while hashed < size:
            data = fh.read(min(chunk_size, size - hashed))
            if not data:
                raise ArtifactError(f"{local} shrank during upload")
            digest.update(data)
            report(len(data))
            end = hashed + len(data)
            while sent < end:
                piece = (
                    data[sent - hashed :]
                    if sent >= hashed
                    else os.pread(fh.fileno(), min(chunk_size, end - sent), sent)
                )
                new = _put_chunk(http, path, sent, piece)
                if new > sent:
                    report(min(new, size) - sent)
                sent = new
            hashed = end
    return digest.hexdigest()


def _failure(artifact: dict[str, Any]) -> str:
    error = artifact.get("error") or {}
    return str(error.get("message") or f"state {artifact.get('state')!r}")


def wait_verified(
    http: HttpClient, artifacts: dict[int, str], timeout: float | None = None
) -> None:
    """Block until the server has checked each artifact {id: path} ("ready"); raises
    ArtifactError naming those that failed, TimeoutError if some are still being checked."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending, failed = dict(artifacts), []
    delay = 0.05
    while pending:
        for artifact_id, remote in list(pending.items()):
            artifact = http.call("GET", f"/api/v1/artifacts/{artifact_id}/")
            if artifact.get("state") == "verifying":
                continue
            del pending[artifact_id]
            if artifact.get("state") != "ready":
                failed.append(f"{remote!r}: {_failure(artifact)}")
        if not pending:
            break
        if deadline is not None and time.monotonic() + delay > deadline:
            raise TimeoutError(f"still verifying on the server: {sorted(pending.values())}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    if failed:
        raise ArtifactError("the server rejected artifact(s) " + "; ".join(failed))


def _upload_s3(
    http: HttpClient,
    artifact: dict[str, Any],
    upload: dict[str, Any],
    run_id: int,
    local: Path,
    remote: str,
    sha256: str,
    size: int,
    workers: int,
    progress: ProgressFn | None,
) -> list[dict[str, Any]]:
    part_size = int(upload["part_size"])
    state_path = _state_path(run_id, remote, sha256)
    upload_id = _multipart_id(upload)
    etags = _load_state(state_path, artifact["id"], upload_id)
    send_part = _part_sender(
        http, local, state_path, artifact["id"], upload_id, etags, progress or (lambda n: None)
    )
    todo = []
    for part in upload.get("parts", []):
        number = int(part["number"])
        offset = (number - 1) * part_size
        length = max(0, min(part_size, size - offset))
        if str(number) in etags:
            if progress is not None:
                progress(length)
            continue
        todo.append((number, part["url"], offset, length, part.get("headers") or {}))

    # The first failure aborts the artifact; parts already done are remembered for the retry.
    parallel_map(lambda args: send_part(*args), todo, workers, "tracker-part")
    numbers = sorted(int(p["number"]) for p in upload.get("parts", []))
    return [{"number": n, "etag": etags[str(n)]} for n in numbers]


def _part_sender(
    http: HttpClient,
    local: Path,
    state_path: Path,
    artifact_id: Any,
    upload_id: str,
    etags: dict[str, str],
    report: ProgressFn,
) -> Callable[[int, str, int, int, dict[str, str] | None], None]:
    """PUT one part to its URL and remember its ETag in `etags` and the state file (for a
    resumed upload), from any of the upload threads."""
    lock = threading.Lock()

    def send(number: int, url: str, offset: int, length: int, headers: dict | None) -> None:
        # `headers` (the part's CRC32) are signed into the URL: they must go as given.
        etag = _put_part(http, url, local, offset, length, headers)
        with lock:
            etags[str(number)] = etag
            _save_state(state_path, artifact_id, upload_id, dict(etags))
        report(length)

    return send


def _upload_chunked(
    http: HttpClient,
    artifact: dict[str, Any],
    upload: dict[str, Any],
    local: Path,
    size: int,
    progress: ProgressFn | None,
) -> None:
    chunk_size = max(1, min(int(upload.get("chunk_size") or 8 * 1024 * 1024), MAX_CHUNK))
    offset = int(upload.get("offset") or 0)
    if progress is not None and offset:
        progress(offset)
    path = f"/api/v1/artifacts/{artifact['id']}/content"
    with open(local, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            data = fh.read(min(chunk_size, size - offset))
            if not data:
                raise ArtifactError(f"{local} shrank during upload")
            new_offset = _put_chunk(http, path, offset, data)
            if progress is not None and new_offset > offset:
                progress(new_offset - offset)
            offset = new_offset


def _put_chunk(http: HttpClient, path: str, offset: int, data: bytes) -> int:
    """PUT one chunk at `offset`; returns the server's new offset (following 409 hints)."""

    def attempt(_: int) -> int:
        try:
            response = http.request(
                "PUT",
                path,
                params={"offset": offset},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        except ApiError as exc:
            if exc.status == 409 and exc.expected_offset is not None:
                return exc.expected_offset  # the server already has more (or less): resync
            raise
        return int(response.json()["offset"])

    return retry_call(attempt, PART_RETRY)


def deliver_artifact_record(http: HttpClient, record: Record, run_id: int | None) -> None:
    """Upload a journaled artifact reference if the file is still the one that was logged."""
    if run_id is None:
        from .records import RunNotCreated

        raise RunNotCreated(ARTIFACT)
    meta = record.json_body()
    local = Path(meta["local_path"])
    if not local.is_file():
        raise ArtifactError(f"artifact {meta['path']!r}: {local} no longer exists")
    if local.stat().st_size != meta["size"]:
        raise ArtifactError(f"artifact {meta['path']!r}: {local} changed since it was logged")
    digest = digest_file(local)
    if digest.sha256 != meta["sha256"]:
        raise ArtifactError(f"artifact {meta['path']!r}: {local} changed since it was logged")
    upload_file(http, run_id, local, meta["path"], digest=digest)


class ArtifactManager:
    """Background uploads of one run's artifacts; `wait()` blocks until they are done."""

    def __init__(
        self,
        http: HttpClient | None,
        run: Any,  # batching.RunState
        journal_fallback: Callable[[dict[str, Any]], None],
        offline: Callable[[], bool],
        *,
        wait_for_run: float = 10.0,
    ) -> None:
        self._http = http
        self._run = run
        self._journal_fallback = journal_fallback
        self._offline = offline
        self._wait_for_run = wait_for_run
        self._pool = WorkerPool(1, "tracker-artifact")
        self._lock = threading.Lock()
        self.total_bytes = 0
        self.done_bytes = 0
        self.uploaded = 0
        self.failed = 0
        self.journaled = 0
        # {artifact id: path} of uploads the server was still verifying when they completed.
        self.verifying: dict[int, str] = {}

    def submit(self, path: str | os.PathLike[str], name: str | None = None) -> list[str]:
        """Schedule the upload; returns the remote paths. Raises at once for a missing path."""
        plan = plan_artifact(path, name)
        for local, remote in plan:
            size = local.stat().st_size
            with self._lock:
                self.total_bytes += 2 * size  # hashing + sending
            self._pool.submit(self._job, local.resolve(), remote)
        return [remote for _, remote in plan]

    def _progress(self, n: int) -> None:
        with self._lock:
            self.done_bytes += n

    def _job(self, local: Path, remote: str) -> None:
        try:
            signature = file_signature(local)
        except OSError as exc:
            self.failed += 1
            logger.error("tracker: cannot read artifact %s: %s", local, exc)
            return
        if self._http is None or self._offline() or not self._run.created.wait(self._wait_for_run):
            self._park(local, remote, signature, "server unreachable")
            return
        try:
            done = upload_file(
                self._http, self._run.server_id, local, remote, progress=self._progress
            )
            self.uploaded += 1
            if done.get("state") == "verifying":
                with self._lock:
                    self.verifying[int(done["id"])] = remote
        except TrackerUnreachable as exc:
            self._park(local, remote, signature, str(exc))
        except ApiError as exc:
            if exc.retryable:
                self._park(local, remote, signature, str(exc))
            else:
                self.failed += 1
                logger.error("tracker: artifact %r rejected by the server: %s", remote, exc)
        except Exception as exc:
            self.failed += 1
            logger.error("tracker: artifact %r failed: %s", remote, exc, exc_info=True)

    def _park(self, local: Path, remote: str, signature: FileSignature, why: str) -> None:
        """Journal a reference to the file as it was logged, for `tracker sync` to upload."""
        try:
            digest = digest_file(local)
        except OSError as exc:
            self.failed += 1
            logger.error("tracker: cannot read artifact %s: %s", local, exc)
            return
        if digest.signature != signature:
            self.failed += 1
            logger.error("tracker: artifact %r changed since it was logged; not kept", remote)
            return
        ref = {"local_path": str(local), "path": remote, "size": digest.size,
               "sha256": digest.sha256}  # fmt: skip
        self.journaled += 1
        logger.warning("tracker: artifact %r saved for `tracker sync` (%s)", remote, why)
        self._journal_fallback(ref)

    def wait(self, progress: bool = True) -> None:
        if self._pool.pending == 0:
            return
        bar = None
        if progress and self.total_bytes - self.done_bytes > 64 * 1024 * 1024:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_bytes,
                initial=self.done_bytes,
                unit="B",
                unit_scale=True,
                desc="tracker: artifacts",
                leave=False,
                disable=None,  # no bar when stderr is not a terminal
            )
        try:
            while not self._pool.wait(timeout=0.25):
                if bar is not None:
                    bar.n = min(self.done_bytes, self.total_bytes)
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()

    def wait_verified(self, timeout: float | None = None) -> None:
        """Wait for the uploads so far, then for the server's sha256 check of each of them."""
        self._pool.wait()
        with self._lock:
            verifying = dict(self.verifying)
        if verifying and self._http is not None:
            settled = True
            try:
                wait_verified(self._http, verifying, timeout)
            except TimeoutError:
                settled = False  # ask again later
                raise
            finally:
                if settled:
                    with self._lock:
                        for artifact_id in verifying:
                            self.verifying.pop(artifact_id, None)

    def close(self) -> None:
        self._pool.wait()
        self._pool.shutdown()


def find_artifact(http: HttpClient, run_id: int, path: str) -> dict[str, Any]:
    wanted = normalize_remote_path(path)
    for item in http.paginate(f"/api/v1/runs/{run_id}/artifacts/"):
        if item.get("path") == wanted:
            return item
    raise ArtifactError(f"run {run_id} has no artifact {wanted!r}")


def download_artifact(
    http: HttpClient, run_id: int, path: str, dest: str | os.PathLike[str] = "."
) -> Path:
    """Stream artifact `path` of run `run_id` to `dest` (a file, or a directory to put it in),
    verifying its sha256; the file only appears under its final name once verified."""
    artifact = find_artifact(http, run_id, path)
    target = Path(dest)
    name = PurePosixPath(artifact["path"]).name
    # A directory: one that exists, a trailing separator, or a new suffix-less path when the
    # artifact has a suffix (`Path("dl") / ""` drops the slash, and "dl" is clearly not a
    # name for `model.pt`).
    if (
        target.is_dir()
        or str(dest).endswith(("/", os.sep))
        or (not target.exists() and not target.suffix and PurePosixPath(name).suffix)
    ):
        target = target / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        got = _fetch(http, artifact, tmp)
        if got is None:
            # Downloaded while the server was verifying it, and it finished in between: its
            # upload object is gone and the download now points at the verified blob.
            got = _fetch(http, artifact, tmp)
        if got is None:
            raise ArtifactError(f"object store answered HTTP 404 for {artifact['path']!r}")
        expected = artifact.get("sha256")
        if expected and got != expected:
            raise ArtifactError(
                f"checksum mismatch for {artifact['path']!r}: expected {expected}, got {got}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fetch(http: HttpClient, artifact: dict[str, Any], tmp: Path) -> str | None:
    """Stream the artifact's bytes into `tmp`; their sha256, or None if the object store no
    longer has the object it was redirected to."""
    digest = hashlib.sha256()
    with (
        open(tmp, "wb") as out,
        http.stream("GET", f"/api/v1/artifacts/{artifact['id']}/download") as response,
    ):
        if response.status_code in (301, 302, 303, 307, 308):
            location = response.headers["Location"]
            # Presigned URL: fetched without our Authorization header.
            with http.plain.stream("GET", location) as redirected:
                if redirected.status_code == 404:
                    return None
                if redirected.status_code >= 400:
                    raise ArtifactError(
                        f"object store answered HTTP {redirected.status_code} "
                        f"for {artifact['path']!r}"
                    )
                for chunk in redirected.iter_bytes(STREAM_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        else:
            for chunk in response.iter_bytes(STREAM_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()

"""`tracker upload`: resumable upload of a TensorBoard logdir, optionally watching it.

The server remembers how many bytes of each (project, path) it holds, so every upload — a
re-run after a crash, or each `--watch` round — only sends the bytes after that offset, and
re-uploading an unchanged logdir sends nothing.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from .http import ApiError, HttpClient, RetryPolicy, retry_call

CHUNK = 8 * 1024 * 1024
_PBTXT_PATHS = re.compile(r'\b(?:tensor_path|metadata_path|image_path)\s*:\s*"([^"]+)"')
CHUNK_RETRY = RetryPolicy(max_attempts=8, max_elapsed=300.0, base=1.0, cap=30.0)


@dataclass(frozen=True)
class LocalFile:
    rel: str  # POSIX path relative to the logdir, as sent to the server
    path: Path
    size: int


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def discover(logdir: Path) -> list[LocalFile]:
    """Event files plus projector configs and the embedding files they reference."""
    root = logdir.resolve()
    found: dict[str, LocalFile] = {}

    def add(path: Path) -> None:
        if not path.is_file() or not _inside(path, root):
            return  # symlinks pointing outside the logdir are never uploaded
        rel = Path(os.path.relpath(path, logdir)).as_posix()
        if rel == ".." or rel.startswith("../"):
            return
        if rel not in found:
            found[rel] = LocalFile(rel, path, path.stat().st_size)

    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames.sort()
        base = Path(dirpath)
        for filename in sorted(filenames):
            if "tfevents" in filename:
                add(base / filename)
            elif filename == "projector_config.pbtxt":
                config = base / filename
                add(config)
                try:
                    text = config.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                for ref in _PBTXT_PATHS.findall(text):
                    ref_path = Path(ref)
                    candidates = (
                        [ref_path]
                        if ref_path.is_absolute()
                        else [base / ref_path, logdir / ref_path]
                    )
                    for candidate in candidates:
                        if candidate.is_file():
                            add(candidate)
                            break
    return sorted(found.values(), key=lambda f: f.rel)


@dataclass
class RoundResult:
    job: dict[str, Any] | None
    files: int
    bytes_sent: int
    warnings: list[str]


class LogdirUploader:
    def __init__(
        self,
        http: HttpClient,
        project: str,
        logdir: Path,
        *,
        runs_mode: str = "merge",
        chunk_size: int = CHUNK,
        progress: bool = True,
        out: TextIO = sys.stdout,
    ) -> None:
        self.http = http
        self.project = project
        self.logdir = logdir
        self.runs_mode = runs_mode
        self.chunk_size = chunk_size
        self.progress = progress
        self.out = out
        self.sent: dict[str, int] = {}  # what the server acknowledged per file, for --watch

    def changed_files(self) -> list[LocalFile]:
        return [f for f in discover(self.logdir) if f.size != self.sent.get(f.rel)]

    def upload_round(self, files: list[LocalFile]) -> RoundResult:
        """Create a job for `files`, send the bytes the server lacks, and finish the job."""
        job = self.http.call(
            "POST",
            f"/api/v1/projects/{self.project}/uploads/",
            json_body={
                "runs_mode": self.runs_mode,
                "files": [{"path": f.rel, "size": f.size} for f in files],
            },
        )
        received = {
            item["path"]: int(item.get("bytes_received") or 0) for item in job.get("files", [])
        }
        warnings: list[str] = []
        total = 0
        for f in files:
            have = received.get(f.rel, 0)
            if have > f.size:
                warnings.append(
                    f"{f.rel}: server already holds {have} bytes but the file has {f.size} "
                    "(was it replaced?); skipped"
                )
                continue
            total += f.size - have
        bar = None
        if self.progress and total:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="uploading",
                file=sys.stderr,
                disable=None,
            )
        sent = 0
        try:
            for f in files:
                offset = received.get(f.rel, 0)
                if offset > f.size:
                    continue
                start = offset
                offset = self._send_file(job["id"], f, offset, bar)
                sent += max(0, offset - start)
                self.sent[f.rel] = offset
        finally:
            if bar is not None:
                bar.close()
        job = self.http.call("POST", f"/api/v1/uploads/{job['id']}/finish/") or job
        return RoundResult(job, len(files), sent, warnings)

    def _send_file(self, job_id: Any, f: LocalFile, offset: int, bar: Any) -> int:
        path = f"/api/v1/uploads/{job_id}/files/content"
        with open(f.path, "rb") as fh:
            while offset < f.size:
                fh.seek(offset)
                data = fh.read(min(self.chunk_size, f.size - offset))
                if not data:
                    break  # truncated while we read: send what exists, the next round resyncs
                new_offset = self._put_chunk(path, f.rel, offset, data)
                if bar is not None:
                    bar.update(max(0, new_offset - offset))
                offset = new_offset
        return offset

    def _put_chunk(self, path: str, rel: str, offset: int, data: bytes) -> int:
        def attempt(_: int) -> int:
            try:
                response = self.http.request(
                    "PUT",
                    f"{path}?path={quote(rel, safe='')}&offset={offset}",
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
            except ApiError as exc:
                if exc.status == 409 and exc.expected_offset is not None:
                    return exc.expected_offset  # the server's truth wins: continue from there
                raise
            return int(response.json()["bytes_received"])

        return retry_call(attempt, CHUNK_RETRY)

    def wait_job(self, job_id: Any, *, poll: float = 0.5, timeout: float | None = None) -> dict:
        """Poll the ingest job until it succeeds or fails."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                job = self.http.call("GET", f"/api/v1/jobs/{job_id}/")
                state = job.get("state")
                if state in ("succeeded", "failed"):
                    return job
                if self.progress and bar is None:
                    from tqdm.auto import tqdm

                    bar = tqdm(
                        total=100, desc="processing", unit="%", file=sys.stderr, disable=None
                    )
                if bar is not None:
                    bar.n = int(100 * float(job.get("progress") or 0))
                    bar.refresh()
                if deadline is not None and time.monotonic() > deadline:
                    return job
                time.sleep(poll)
                poll = min(poll * 1.5, 5.0)
        finally:
            if bar is not None:
                bar.close()


def format_summary(job: dict[str, Any], project_url: str) -> str:
    summary = job.get("summary") or {}
    lines = [
        "runs: {runs:,}  points: {points:,}  images: {images:,}  histograms: {hist:,}  "
        "skipped records: {skipped:,}".format(
            runs=int(summary.get("runs") or 0),
            points=int(summary.get("points") or 0),
            images=int(summary.get("images") or 0),
            hist=int(summary.get("histograms") or 0),
            skipped=int(summary.get("skipped_records") or 0),
        )
    ]
    problems = job.get("problems") or []
    if problems:
        lines.append(f"problems ({len(problems)}):")
        for problem in problems[:20]:
            lines.append(
                f"  {problem.get('file')} @ {problem.get('offset')}: "
                f"{problem.get('kind')}: {problem.get('message')}"
            )
        if len(problems) > 20:
            lines.append(f"  ... and {len(problems) - 20} more")
    lines.append(f"view at: {project_url}")
    return "\n".join(lines)

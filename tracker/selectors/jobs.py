"""Reading ingest jobs: state, progress, problems and files as the API shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from ..models import IngestJob, JobState, Project, UploadFile


@dataclass
class JobView:
    job: IngestJob
    progress: float
    summary: dict[str, Any]
    problems: list[dict[str, Any]]
    files: list[dict[str, Any]]


def job_files(job: IngestJob) -> list[UploadFile]:
    return list(
        UploadFile.objects.filter(job=job)
        .only("relative_path", "bytes_received", "bytes_parsed", "parse_state")
        .order_by("relative_path")
    )


def collect_problems(
    job: IngestJob, files: list[UploadFile], include_pending: bool
) -> list[dict[str, Any]]:
    """Intake problems (rejected archive members), then each file's, in file order.

    Problems found while parsing live on each file, persisted with its parse position so that
    a re-run never reports one twice. A damaged or incomplete tail is only "pending" while
    the job runs (more bytes may complete it); it is shown once the job is done.
    """
    summary = job.summary or {}
    problems = list(summary.get("intake_problems") or [])
    for f in files:
        state = f.parse_state or {}
        for p in state.get("problems", []):
            problems.append({"file": f.relative_path, **p})
        pending = state.get("pending")
        if pending and include_pending:
            problems.append({"file": f.relative_path, **pending})
        if state.get("ignored"):
            problems.append(
                {
                    "file": f.relative_path,
                    "offset": 0,
                    "kind": "ignored",
                    "message": state["ignored"],
                }
            )
    return problems


HIDDEN_SUMMARY_KEYS = ("archive_expanded", "root_name", "intake_problems")


def job_view(job: IngestJob) -> JobView:
    """Everything GET /jobs/{id}/ shows, in two queries whatever the number of files."""
    files = job_files(job)
    done = job.state in (JobState.SUCCEEDED, JobState.FAILED)
    problems = collect_problems(job, files, include_pending=done)
    received = parsed = 0
    out_files = []
    for f in files:
        state = f.parse_state or {}
        received += f.bytes_received
        # A fully read file counts as parsed even if an incomplete tail waits for more bytes.
        scanned = state.get("scanned_to") == f.bytes_received
        parsed += f.bytes_received if scanned else f.bytes_parsed
        out_files.append(
            {
                "path": f.relative_path,
                "bytes_received": f.bytes_received,
                "bytes_parsed": f.bytes_parsed,
            }
        )
    if job.state == JobState.SUCCEEDED:
        progress = 1.0
    elif job.state == JobState.RUNNING and received:
        progress = round(min(parsed / received, 0.999), 4)
    else:
        progress = float(job.progress or 0.0)
    summary = {k: v for k, v in (job.summary or {}).items() if k not in HIDDEN_SUMMARY_KEYS}
    for key in ("runs", "points", "images", "histograms", "texts", "skipped_records"):
        summary.setdefault(key, 0)
    return JobView(job, progress, summary, problems, out_files)


def project_jobs(project: Project) -> QuerySet[IngestJob]:
    return (
        IngestJob.objects.filter(project=project)
        .select_related("project__workspace", "created_by")
        .order_by("-created_at", "-id")
    )

"""Celery tasks of the ingest area (thin wrappers over tracker.services.uploads).

All are idempotent and ack late: a worker killed mid-task leaves the message to be
redelivered (or the job row to be re-sent by the reconciler), and the re-run continues from
the parse positions committed with the data.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from .celery import app
from .models import IngestJob, JobKind
from .services import jobs, uploads

log = logging.getLogger(__name__)

INGEST_KINDS = (JobKind.UPLOAD, JobKind.ARCHIVE)


def _retry_or_fail(task, job_id: int, exc: Exception) -> None:  # type: ignore[no-untyped-def]
    """Infrastructure errors (S3, DB) retry with backoff; after MAX_ATTEMPTS the job fails.

    Bad input never gets here: the parser reports damage as problems instead of raising.
    """
    log.exception("ingest job %s: %s", job_id, exc)
    eager = settings.CELERY_TASK_ALWAYS_EAGER
    retries = task.request.retries or 0
    if eager or retries >= uploads.MAX_ATTEMPTS:
        uploads.fail_job(job_id, f"Import failed: {type(exc).__name__}: {exc}")
        return
    raise task.retry(exc=exc, countdown=min(2**retries, 60))


@shared_task(
    name="tracker.ingest.process_job", bind=True, acks_late=True, max_retries=uploads.MAX_ATTEMPTS
)
def process_job(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        uploads.process_job(job_id, run_task=lambda j, r: jobs.dispatch(ingest_run, j, r))
    except Exception as exc:  # noqa: BLE001 - see _retry_or_fail
        _retry_or_fail(self, job_id, exc)


@shared_task(
    name="tracker.ingest.ingest_run", bind=True, acks_late=True, max_retries=uploads.MAX_ATTEMPTS
)
def ingest_run(self, job_id: int, run_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        uploads.ingest_run(job_id, run_id)
    except Exception as exc:  # noqa: BLE001 - see _retry_or_fail
        _retry_or_fail(self, job_id, exc)


@shared_task(name="tracker.ingest.reconcile")
def reconcile(stale_after_seconds: float = 120.0) -> int:
    """Re-send ingest jobs whose message was lost or whose worker died (run periodically)."""

    def send(job: IngestJob) -> None:
        if job.kind in INGEST_KINDS:
            process_job.apply_async(args=[job.pk])

    return jobs.reconcile_jobs(send, stale_after=timedelta(seconds=stale_after_seconds))


# `celery worker -B` (docker-compose) runs the reconciler every minute.
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "ingest-reconcile": {"task": "tracker.ingest.reconcile", "schedule": 60.0},
}


@worker_ready.connect
def _reconcile_on_start(sender=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
    # A worker coming back after a crash picks up what the dead one left behind.
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        reconcile.apply_async()

"""Job rows first, Celery message second.

`enqueue` commits the job row, then sends the message on commit. A message lost in Redis (it
keeps nothing on disk here) is re-sent by `reconcile_jobs`, run periodically by the worker and
at start-up; tasks are idempotent, so a duplicate message is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import IngestJob, JobState


def dispatch(task: Any, *args: Any) -> None:
    """Send a Celery task after the current transaction commits (immediately when eager).

    In eager mode the task runs in-process right away, inside the caller's transaction, so
    tests and the embedded server see its effects without a worker.
    """
    if settings.CELERY_TASK_ALWAYS_EAGER:
        task.apply(args=args, throw=True)
        return
    # robust: with the broker down the send fails, but the job row is committed and the
    # reconciler re-sends it; the request that created the job must not become a 500.
    transaction.on_commit(lambda: task.apply_async(args=args), robust=True)


def enqueue(job: IngestJob, task: Any) -> IngestJob:
    IngestJob.objects.filter(pk=job.pk).update(enqueued_at=timezone.now())
    dispatch(task, job.pk)
    return job


def reconcile_jobs(
    send: Callable[[IngestJob], None], stale_after: timedelta = timedelta(minutes=2)
) -> int:
    """Re-send jobs whose message may have been lost (pending/running and not updated lately)."""
    cutoff = timezone.now() - stale_after
    stale = list(
        IngestJob.objects.filter(
            state__in=[JobState.PENDING, JobState.RUNNING], updated_at__lt=cutoff
        )
    )
    for job in stale:
        IngestJob.objects.filter(pk=job.pk).update(
            enqueued_at=timezone.now(), updated_at=timezone.now()
        )
        send(job)
    return len(stale)

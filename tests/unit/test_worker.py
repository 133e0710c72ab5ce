"""Tasks run on a real Celery worker consuming from Redis, against the test database."""

from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone

from tracker.models import IdempotencyRecord, IngestJob, JobKind, JobState
from tracker.services import jobs
from tracker.tasks import purge_idempotency


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_task_runs_on_real_worker(celery_worker, tenants):
    old = IdempotencyRecord.objects.create(scope="s", key="old-key-1", status_code=200, response={})
    IdempotencyRecord.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=30)
    )
    fresh = IdempotencyRecord.objects.create(
        scope="s", key="new-key-1", status_code=200, response={}
    )
    jobs.dispatch(purge_idempotency)  # outside a transaction: sent at once to Redis
    assert _wait(lambda: not IdempotencyRecord.objects.filter(pk=old.pk).exists())
    assert IdempotencyRecord.objects.filter(pk=fresh.pk).exists()


def test_reconciler_resends_stale_jobs(db, tenants):
    stale = IngestJob.objects.create(
        project=tenants.vision, kind=JobKind.UPLOAD, state=JobState.PENDING
    )
    IngestJob.objects.filter(pk=stale.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    recent = IngestJob.objects.create(
        project=tenants.vision, kind=JobKind.UPLOAD, state=JobState.PENDING
    )
    done = IngestJob.objects.create(
        project=tenants.vision, kind=JobKind.UPLOAD, state=JobState.SUCCEEDED
    )
    IngestJob.objects.filter(pk=done.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    sent: list[int] = []
    assert jobs.reconcile_jobs(lambda job: sent.append(job.pk)) == 1
    assert sent == [stale.pk] and recent.pk not in sent

"""Celery tasks: thin wrappers over services. Area modules register theirs in tracker/tasks_*.py."""

from __future__ import annotations

from celery import shared_task

from .services import idempotency


@shared_task(name="tracker.ping")
def ping(value: int) -> int:
    """Round-trip check used by the worker tests and health checks."""
    return value


@shared_task(name="tracker.purge_idempotency")
def purge_idempotency() -> int:
    return idempotency.purge_expired()


@shared_task(name="tracker.cleanup_stale_uploads")
def cleanup_stale_uploads(older_than_hours: float = 24.0) -> dict[str, int]:
    """Abort orphaned S3 multipart uploads, delete old tmp/ objects and completed uploads no
    artifact owns (beat runs it hourly)."""
    from datetime import timedelta

    from .services import storage_cleanup

    report = storage_cleanup.abort_orphan_uploads(timedelta(hours=older_than_hours))
    return {
        "aborted": report.aborted_uploads,
        "tmp_deleted": report.deleted_tmp_objects,
        "uploads_deleted": report.deleted_upload_objects,
    }


# Area task modules register on import (Celery autodiscovers tracker.tasks only).
from . import tasks_ingest, tasks_media  # noqa: E402,F401

"""Celery tasks of the media area (thin wrappers over services)."""

from __future__ import annotations

from celery import shared_task

from .services import artifacts, media


@shared_task(name="tracker.media.make_thumbnails", acks_late=True)
def make_thumbnails(image_ids: list[int]) -> int:
    return media.make_thumbnails(image_ids)


@shared_task(
    name="tracker.media.verify_artifact",
    acks_late=True,
    autoretry_for=(Exception,),  # S3 or the database briefly away; idempotent, so safe
    retry_backoff=5,
    max_retries=5,
)
def verify_artifact(artifact_id: int) -> str | None:
    """sha256 of a large uploaded artifact, then ready (content-addressed) or failed."""
    return artifacts.verify_upload(artifact_id)


@shared_task(name="tracker.media.reconcile_verifications")
def reconcile_verifications() -> int:
    """Re-send verifications whose message was lost (run every few minutes)."""
    return artifacts.reconcile_verifications()


@shared_task(name="tracker.media.cleanup_uploads")
def cleanup_uploads() -> int:
    """Abort stale S3 multipart uploads and drop stale part files (run it hourly)."""
    return artifacts.cleanup_stale_uploads()

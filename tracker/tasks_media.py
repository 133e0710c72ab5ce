"""Celery tasks of the media area (thin wrappers over services)."""

from __future__ import annotations

from celery import shared_task

from .services import artifacts, media


@shared_task(name="tracker.media.make_thumbnails", acks_late=True)
def make_thumbnails(image_ids: list[int]) -> int:
    return media.make_thumbnails(image_ids)


@shared_task(name="tracker.media.cleanup_uploads")
def cleanup_uploads() -> int:
    """Abort stale S3 multipart uploads and drop stale part files (run it hourly)."""
    return artifacts.cleanup_stale_uploads()

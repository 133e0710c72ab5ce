"""Reads of images and artifacts; objects are resolved through tracker.access."""

from __future__ import annotations

import posixpath
from typing import Any

from django.db.models import QuerySet

from .. import access
from ..access import VIEWER, Principal
from ..models import Artifact, ArtifactState, Image, Run
from ..services.errors import Conflict
from ..storage import S3BlobStore, get_blob_store


def images_for_run(run: Run, key: str | None = None) -> QuerySet[Image]:
    qs = Image.objects.filter(run=run)
    if key:
        qs = qs.filter(key=key)
    return qs


def artifacts_for_run(run: Run) -> QuerySet[Artifact]:
    return Artifact.objects.filter(run=run)


def _run_of(principal: Principal, model: type, object_id: Any, need: str) -> tuple[Any, Run]:
    """Fetch a run-owned row, then its run through access (invisible run → NotVisible)."""
    try:
        obj = model.objects.get(pk=int(object_id))
    except (model.DoesNotExist, ValueError, TypeError, OverflowError):
        raise access.NotVisible() from None
    run = access.get_run(principal, obj.run_id, need)
    obj.run = run
    return obj, run


def get_image(principal: Principal, image_id: Any, need: str = VIEWER) -> Image:
    image, _ = _run_of(principal, Image, image_id, need)
    return image


def get_artifact(principal: Principal, artifact_id: Any, need: str = VIEWER) -> Artifact:
    artifact, _ = _run_of(principal, Artifact, artifact_id, need)
    return artifact


def artifact_filename(artifact: Artifact) -> str:
    return posixpath.basename(artifact.path) or "artifact"


def artifact_download_url(artifact: Artifact) -> str | None:
    """Presigned GET of a downloadable artifact on S3; None when its blob is on the local store
    (the caller streams it). Raises Conflict when there is nothing to download (yet).

    Ready: its content-addressed blob. Verifying: the object S3 assembled under its upload key
    (exactly the bytes that become the blob if the worker's sha256 check passes; the client
    checks the sha256 of what it downloads in any case).
    """
    store = get_blob_store()
    mime, filename = "application/octet-stream", artifact_filename(artifact)
    if artifact.state == ArtifactState.READY and artifact.blob_id:
        if isinstance(store, S3BlobStore):
            return store.presigned_get(artifact.blob_id, filename, mime)
        return None
    key = artifact.metadata.get("upload_key")
    if artifact.state == ArtifactState.VERIFYING and key and isinstance(store, S3BlobStore):
        return store.presigned_get_key(key, filename, mime)
    if artifact.state == ArtifactState.FAILED:
        error = artifact.metadata.get("error") or {}
        raise Conflict(
            error.get("message", "The upload failed verification.") + " Log the artifact again.",
            code="verification_failed",
        )
    raise Conflict("This artifact is still uploading.", code="not_ready")

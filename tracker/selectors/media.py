"""Reads of images and artifacts; objects are resolved through tracker.access."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from .. import access
from ..access import VIEWER, Principal
from ..models import Artifact, Image, Run


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

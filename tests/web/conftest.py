"""Fixtures for the web UI tests: a filled project built with the real services."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def add_image(run: Any, key: str, step: int, data: bytes, mime: str = "image/png") -> Any:
    from tracker.models import Blob, Image
    from tracker.storage import get_blob_store

    ref = get_blob_store().put_bytes(data)
    blob, _ = Blob.objects.get_or_create(
        sha256=ref.sha256, defaults={"size": ref.size, "mime": mime}
    )
    return Image.objects.create(
        run=run, key=key, step=step, blob=blob, width=16, height=16, mime=mime
    )


def add_points(
    run: Any, key: str, values: list[float], kinds: dict[str, str] | None = None
) -> None:
    from tracker.services.metrics import append_points
    from tracker.services.series_codec import Points

    n = len(values)
    pts = Points.of(
        np.arange(n, dtype=np.int64),
        1_700_000_000.0 + np.arange(n, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
    )
    append_points(run, {key: pts}, kinds)


@pytest.fixture
def filled(tenants: Any) -> Any:
    """acme/vision with two runs: params, scalars (with a NaN), telemetry, images, text,
    a histogram and an artifact; plus a run in mallory's project."""
    from tracker.models import Artifact, ArtifactState, Blob, Histogram, TextEntry
    from tracker.services.runs import create_run
    from tracker.storage import get_blob_store

    t = tenants
    t.run1 = create_run(
        project=t.vision,
        user=t.alice,
        name="resnet-a",
        tags=["baseline"],
        params={"lr": 0.001, "optimizer": "adam", "layers": 18},
    )
    t.run2 = create_run(
        project=t.vision,
        user=t.bob,
        name="resnet-b",
        tags=["sweep"],
        params={"lr": 0.01, "optimizer": "sgd", "layers": 18},
    )
    add_points(t.run1, "loss", [1.0, 0.8, float("nan"), 0.5, 0.4])
    add_points(t.run1, "val/acc", [0.1, 0.3, 0.5, 0.6, 0.7])
    add_points(t.run2, "loss", [1.2, 0.9, 0.7, 0.6, 0.55])
    add_points(t.run1, "sys/cpu_percent", [10.0, 50.0, 90.0])
    t.img0 = add_image(t.run1, "samples", 0, png_bytes((255, 0, 0)))
    t.img1 = add_image(t.run1, "samples", 5, png_bytes((0, 0, 255)))
    TextEntry.objects.create(
        run=t.run1, key="notes", step=1, value="<b>bold</b> & <script>x()</script>"
    )
    Histogram.objects.create(
        run=t.run1,
        key="weights",
        step=0,
        bucket_limits=[-1.0, 0.0, 1.0],
        bucket_counts=[1.0, 5.0, 2.0],
        min=-2.0,
        max=1.0,
        num=8.0,
    )
    Histogram.objects.create(
        run=t.run1,
        key="weights",
        step=5,
        bucket_limits=[-0.5, 0.5, 1.5],
        bucket_counts=[2.0, 4.0, 2.0],
        min=-1.0,
        max=1.5,
        num=8.0,
    )
    ref = get_blob_store().put_bytes(b"checkpoint-bytes")
    blob, _ = Blob.objects.get_or_create(sha256=ref.sha256, defaults={"size": ref.size})
    t.artifact = Artifact.objects.create(
        run=t.run1,
        path="checkpoints/epoch1.pt",
        size=ref.size,
        sha256=ref.sha256,
        state=ArtifactState.READY,
        blob=blob,
    )
    t.secret_run = create_run(project=t.secret, user=t.mallory, name="umbrella-run")
    return t


@pytest.fixture
def web(client: Any) -> Any:
    """web(user) -> a Django test client logged in as that user (or anonymous)."""
    from django.test import Client

    def make(user: Any = None, **kwargs: Any) -> Client:
        c = Client(**kwargs)
        if user is not None:
            c.force_login(user)
        return c

    return make

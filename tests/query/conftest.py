"""Data for the read-side tests: runs of acme/vision with params, metrics and media."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.factories import RunFactory
from tracker.models import Blob, Histogram, Image, PRCurve, TextEntry
from tracker.services import runs as run_services
from tracker.services.metrics import append_points
from tracker.services.series_codec import Points
from tracker.storage import get_blob_store


def make_run(project: Any, user: Any = None, *, params: dict | None = None, **kw: Any) -> Any:
    run = RunFactory(project=project, created_by=user, **kw)
    if params:
        run_services.set_params(run, params)
    return run


def put_series(run: Any, key: str, values: Any, *, steps: Any = None, walls: Any = None) -> Points:
    values = np.asarray(values, dtype=np.float64)
    steps = np.arange(len(values)) if steps is None else np.asarray(steps)
    walls = 1.7e9 + np.arange(len(values)) * 0.5 if walls is None else np.asarray(walls)
    pts = Points.of(steps, walls, values)
    append_points(run, {key: pts})
    return pts


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def add_media(run: Any) -> None:
    """Two images of one tag, histograms, text and a PR curve: what a TensorBoard run holds."""
    store = get_blob_store()
    for step, color in ((0, (255, 0, 0)), (5, (0, 0, 255))):
        data = png_bytes(color)
        ref = store.put_bytes(data)
        blob, _ = Blob.objects.get_or_create(
            sha256=ref.sha256, defaults={"size": len(data), "mime": "image/png"}
        )
        Image.objects.create(
            run=run, key="samples/=x", step=step, blob=blob, width=4, height=3, mime="image/png"
        )
    for step in range(3):
        Histogram.objects.create(
            run=run,
            key="weights",
            step=step,
            wall_time=1.7e9 + step,
            bucket_limits=[0.0, 1.0, 2.0],
            bucket_counts=[step, 1, 2],
            min=0.0,
            max=2.0,
            num=3.0 + step,
            sum=3.0,
            sum_squares=5.0,
        )
    TextEntry.objects.create(run=run, key="notes", step=1, wall_time=1.7e9, value="<b>hi</b>")
    PRCurve.objects.create(
        run=run, key="pr", step=2, wall_time=1.7e9, data={"precision": [1.0], "recall": [0.5]}
    )


@pytest.fixture
def vision_runs(tenants: Any) -> list[Any]:
    """Three runs with params and metrics in acme/vision, one run in umbrella/secret."""
    t = tenants
    r1 = make_run(
        t.vision, t.alice, name="resnet-a", params={"lr": 0.001, "opt": "adam"}, tags=["baseline"]
    )
    r2 = make_run(t.vision, t.bob, name="ResNet-b", params={"lr": 0.1, "opt": "sgd"})
    r3 = make_run(t.vision, t.alice, name="vit", params={"lr": 0.01, "flag": True})
    put_series(r1, "val/acc", [0.5, 0.95, 0.9])
    put_series(r2, "val/acc", [0.2, 0.4])
    put_series(r1, "loss", [1.0, float("nan"), 0.5])
    t.other = make_run(t.secret, t.mallory, name="secret-run", params={"lr": 0.5})
    put_series(t.other, "val/acc", [0.99])
    return [r1, r2, r3]

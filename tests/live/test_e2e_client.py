"""The real client (`tracker_client`) against gunicorn + PostgreSQL + moto S3 (+ Celery).

Everything is read back from the database and the blob store, not from the client.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tracker.models import (
    Artifact,
    Histogram,
    Image,
    Param,
    PRCurve,
    Run,
    Series,
    TextEntry,
)
from tracker.selectors.series import read_points
from tracker.storage import get_blob_store

pytestmark = pytest.mark.timeout(300)


def decode(sha: str) -> np.ndarray:
    with PILImage.open(io.BytesIO(get_blob_store().read_bytes(sha))) as img:
        return np.asarray(img.convert("RGB"))


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_every_client_method_reads_back_exactly(
    tenants, token_for, server_env, client_env, tmp_path, celery_worker
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import tracker_client

    from tests.live.conftest import Gunicorn

    # Thumbnails go through Redis to the real worker of this test process.
    server = Gunicorn({**server_env, "CELERY_TASK_ALWAYS_EAGER": "0"}).start()
    try:
        token = token_for(tenants.bob)
        run = tracker_client.init(
            project="acme/vision",
            name="e2e-all",
            params={"opt": {"lr": 3e-4, "beta1": 0.9}, "arch": "resnet", "ema": None},
            tags=["baseline"],
            url=server.url,
            token=token,
            telemetry=False,
        )
        n = 3000
        rng = np.random.default_rng(1)
        losses = rng.random(n)
        for step in range(n):
            run.log({"loss": float(losses[step]), "acc": step / n}, step=step)
        run.log_metric("weird", float("nan"), step=0)
        run.log_metric("weird", float("inf"), step=1)
        run.log_metric("weird", float("-inf"), step=2)
        run.log_params({"batch": {"size": 64}, "flag": True})
        run.log_text("notes", "hello <b>world</b>", step=5)

        arr = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
        run.log_image("np", arr, step=1, caption="numpy")
        pil = PILImage.fromarray(rng.integers(0, 255, size=(16, 20, 3), dtype=np.uint8))
        run.log_image("pil", pil, step=1)
        fig, ax = plt.subplots(figsize=(3, 2), dpi=100)
        ax.plot([0, 1, 2], [1, 0, 1])
        run.log_image("mpl", fig, step=1)
        plt.close(fig)
        tensor = torch.rand(3, 300, 400)
        run.log_image("torch", tensor, step=2)

        run.log_histogram("weights", rng.standard_normal(1000), step=3)
        labels = rng.integers(0, 2, size=200).astype(bool)
        preds = rng.random(200)
        run.log_pr_curve("pr", labels, preds, step=4, num_thresholds=11)

        big = tmp_path / "model.pt"
        big.write_bytes(os.urandom(9 * 1024 * 1024 + 17))
        run.log_artifact(big)
        folder = tmp_path / "outputs"
        (folder / "sub").mkdir(parents=True)
        (folder / "a.txt").write_text("alpha")
        (folder / "sub" / "b.json").write_text('{"b": 1}')
        run.log_artifact(folder)
        run.set_tags(["baseline", "e2e"])
        run.finish()
        run_id = run.id

        row = Run.objects.get(pk=run_id)
        assert row.name == "e2e-all" and row.status == "finished" and row.ended_at
        assert row.tags == ["baseline", "e2e"]
        assert row.created_by == tenants.bob
        params = dict(Param.objects.filter(run=row).values_list("key", "value"))
        assert params == {
            "opt/lr": 3e-4,
            "opt/beta1": 0.9,
            "arch": "resnet",
            "ema": None,
            "batch/size": 64,
            "flag": True,
        }

        loss = read_points(Series.objects.get(run=row, key="loss"))
        assert loss.steps.tolist() == list(range(n))
        assert loss.values.tolist() == losses.tolist()  # bit-exact
        acc = read_points(Series.objects.get(run=row, key="acc"))
        assert acc.values.tolist() == [s / n for s in range(n)]
        weird = read_points(Series.objects.get(run=row, key="weird"))
        assert math.isnan(weird.values[0]) and weird.values[1] == math.inf
        assert weird.values[2] == -math.inf
        assert abs(loss.walls[0] - time.time()) < 300

        assert TextEntry.objects.get(run=row, key="notes", step=5).value == "hello <b>world</b>"

        images = {i.key: i for i in Image.objects.filter(run=row)}
        assert set(images) == {"np", "pil", "mpl", "torch"}
        assert images["np"].caption == "numpy" and images["np"].mime == "image/png"
        assert np.array_equal(decode(images["np"].blob_id), arr)
        assert np.array_equal(decode(images["pil"].blob_id), np.asarray(pil))
        assert (images["mpl"].width, images["mpl"].height) == (300, 200)
        assert (images["torch"].width, images["torch"].height) == (400, 300)
        expected = (tensor.numpy().transpose(1, 2, 0) * 255).round()
        assert np.abs(decode(images["torch"].blob_id).astype(float) - expected).max() <= 1
        # The worker made a thumbnail of the big one; small images are their own thumbnail.
        thumb = wait_for(
            lambda: Image.objects.filter(pk=images["torch"].pk).values_list("thumbnail", flat=True)[
                0
            ]
        )
        assert thumb != images["torch"].blob_id
        with PILImage.open(io.BytesIO(get_blob_store().read_bytes(thumb))) as th:
            assert th.size == (256, 192)

        hist = Histogram.objects.get(run=row, key="weights", step=3)
        assert sum(hist.bucket_counts) == 1000 and hist.num == 1000
        pr = PRCurve.objects.get(run=row, key="pr", step=4)
        assert len(pr.data["thresholds"]) == 11
        assert pr.data["tp"][0] == float(labels.sum())

        arts = {a.path: a for a in Artifact.objects.filter(run=row)}
        assert set(arts) == {"model.pt", "outputs/a.txt", "outputs/sub/b.json"}
        assert all(a.state == "ready" for a in arts.values())
        big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
        assert arts["model.pt"].sha256 == big_sha == arts["model.pt"].blob_id
        assert get_blob_store().read_bytes(big_sha) == big.read_bytes()

        # Download through the client's read path (S3 presigned redirect + sha256 check).
        again = tracker_client.Run(
            run_id=run_id, url=server.url, token=token, telemetry=False, project="acme/vision"
        )
        got = again.download_artifact("model.pt", tmp_path / "dl" / "")
        assert got.read_bytes() == big.read_bytes()
        got = again.download_artifact("outputs/sub/b.json", tmp_path / "dl" / "")
        assert got.read_text() == '{"b": 1}'
        again.finish()
    finally:
        server.stop()


def test_resumed_run_continues_its_step_counter_and_keeps_list_params(
    tenants, token_for, server_env, client_env
):
    import tracker_client

    from tests.live.conftest import Gunicorn

    server = Gunicorn(server_env).start()
    try:
        token = token_for(tenants.bob)
        first = tracker_client.Run(
            project="acme/vision",
            name="resumable",
            params={"layers": [64, 128], "betas": (0.9, 0.999)},
            url=server.url,
            token=token,
            telemetry=False,
        )
        for i in range(10):
            first.log({"loss": float(i)})
        first.finish()

        again = tracker_client.Run(run_id=first.id, url=server.url, token=token, telemetry=False)
        for i in range(10, 15):
            again.log({"loss": float(i)})
        again.finish()

        series = Series.objects.get(run_id=first.id, key="loss")
        points = read_points(series)
        assert points.steps.tolist() == list(range(15))
        assert points.values.tolist() == [float(i) for i in range(15)]
        params = dict(Param.objects.filter(run_id=first.id).values_list("key", "value"))
        assert params == {"layers": [64, 128], "betas": [0.9, 0.999]}
    finally:
        server.stop()

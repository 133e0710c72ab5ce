"""Helpers for the logdir upload tests: walk a logdir, upload it through the API, read back."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from rest_framework.test import APIClient

from bench.tfevents_writer import write_scalar_file
from tracker.models import IngestJob, Run, Series
from tracker.selectors.series import read_points

PROJECT = "acme/vision"


def logdir_files(root: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def create_upload(client: APIClient, root: Path, paths: list[str] | None = None, **extra: Any):
    paths = paths if paths is not None else logdir_files(root)
    body = {"files": [{"path": p, "size": (root / p).stat().st_size} for p in paths], **extra}
    return client.post(f"/api/v1/projects/{PROJECT}/uploads/", body, format="json")


def put_chunk(client: APIClient, job_id: int, path: str, offset: int, data: bytes):
    from urllib.parse import quote

    return client.generic(
        "PUT",
        f"/api/v1/uploads/{job_id}/files/content?path={quote(path)}&offset={offset}",
        data,
        content_type="application/octet-stream",
    )


def send_files(
    client: APIClient,
    root: Path,
    job: dict[str, Any],
    chunk: int = 1 << 16,
    limit: dict[str, int] | None = None,
) -> None:
    """Send every file from what the server holds (bytes_received) to its end (or `limit`)."""
    for f in job["files"]:
        data = (root / f["path"]).read_bytes()
        end = len(data) if limit is None else min(len(data), limit.get(f["path"], len(data)))
        offset = f["bytes_received"]
        while offset < end:
            part = data[offset : min(offset + chunk, end)]
            r = put_chunk(client, job["id"], f["path"], offset, part)
            assert r.status_code == 200, r.content
            offset = r.json()["bytes_received"]


def upload_logdir(
    client: APIClient, root: Path, chunk: int = 1 << 16, **extra: Any
) -> dict[str, Any]:
    """The whole protocol; returns the job as GET /jobs/{id}/ shows it after finishing."""
    r = create_upload(client, root, **extra)
    assert r.status_code == 201, r.content
    job = r.json()
    send_files(client, root, job, chunk)
    r = client.post(f"/api/v1/uploads/{job['id']}/finish/")
    assert r.status_code == 202, r.content
    return client.get(f"/api/v1/jobs/{job['id']}/").json()


def stored_scalars(run: Run) -> dict[str, list[tuple[int, float, float]]]:
    out = {}
    for series in Series.objects.filter(run=run).order_by("key"):
        pts = read_points(series)
        out[series.key] = list(
            zip(pts.steps.tolist(), pts.walls.tolist(), pts.values.tolist(), strict=True)
        )
    return out


def accumulate(directory: Path):  # type: ignore[no-untyped-def]
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(
        str(directory),
        size_guidance={
            ea.COMPRESSED_HISTOGRAMS: 0,
            ea.IMAGES: 0,
            ea.AUDIO: 0,
            ea.SCALARS: 0,
            ea.HISTOGRAMS: 0,
            ea.TENSORS: 0,
        },
    )
    acc.Reload()
    return acc


def tb_scalars(directory: Path, prefix: str = "") -> dict[str, list[tuple[int, float, float]]]:
    """What TensorBoard shows, keyed like Tracker keys them (last write wins per step)."""
    acc = accumulate(directory)
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step: dict[int, tuple[int, float, float]] = {}
        for e in acc.Scalars(tag):
            by_step[e.step] = (e.step, e.wall_time, e.value)
        out[f"{prefix}/{tag}" if prefix else tag] = [by_step[s] for s in sorted(by_step)]
    return out


def same_points(
    ours: list[tuple[int, float, float]], theirs: list[tuple[int, float, float]]
) -> None:
    assert [p[0] for p in ours] == [p[0] for p in theirs]
    for (s1, w1, v1), (_s2, w2, v2) in zip(ours, theirs, strict=True):
        # Wall times are stored with microsecond precision (series codec).
        assert abs(w1 - w2) <= 1e-6 * 1.01, (s1, w1, w2)
        if math.isnan(v2):
            assert math.isnan(v1), (s1, v1, v2)
        else:
            assert v1 == v2, (s1, v1, v2)


def job_row(job: dict[str, Any]) -> IngestJob:
    return IngestJob.objects.get(pk=job["id"])


def expected_value(run: int, tag: int, step: int) -> float:
    import numpy as np

    return float(np.float32((step * 7 + tag * 3 + run) / 11.0))


def write_scalar_logdir(root: Path, runs: int, tags: int, steps: int) -> int:
    """`runs` runs of `tags` scalar tags x `steps` steps, `expected_value` at every point."""
    names = [f"m/t{t:02d}".encode() for t in range(tags)]
    for r in range(runs):
        write_scalar_file(
            root / f"run_{r}" / f"events.out.tfevents.1700000000.host.{r}",
            steps,
            names,
            lambda step, t, r=r: expected_value(r, t, step),
        )
    return runs * tags * steps


def check_scalar_logdir(project: Any, runs: int, tags: int, steps: int) -> None:
    """Stored data is exactly what write_scalar_logdir wrote: every point once."""
    import numpy as np

    for r in range(runs):
        run = Run.objects.get(project=project, source_path=f"run_{r}")
        series = {s.key: s for s in Series.objects.filter(run=run)}
        assert sorted(series) == [f"m/t{t:02d}" for t in range(tags)]
        for t in range(tags):
            s = series[f"m/t{t:02d}"]
            pts = read_points(s)
            assert s.count == len(pts) == steps
            assert pts.steps.tolist() == list(range(steps))
            want = np.array([expected_value(r, t, k) for k in range(steps)])
            assert np.array_equal(pts.values, want)
            assert np.allclose(pts.walls, 1.7e9 + np.arange(steps) * 0.05, rtol=0, atol=1e-6)

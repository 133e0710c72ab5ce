"""Imports run by real Celery workers on Redis, including one SIGKILLed mid-ingest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.harness import stop_group
from tests.conftest import subprocess_env
from tests.helpers import start_worker, wait_until
from tests.ingest_api.helpers import (
    check_scalar_logdir,
    create_upload,
    same_points,
    send_files,
    stored_scalars,
    tb_scalars,
    write_scalar_logdir,
)
from tracker.models import IngestJob, Run, SeriesChunk, UploadFile


def _wait_job(job_id: int, timeout: float = 120.0, nudge=None) -> IngestJob:  # type: ignore[no-untyped-def]
    def finished() -> IngestJob | None:
        job = IngestJob.objects.get(pk=job_id)
        return job if job.state in ("succeeded", "failed") else None

    try:
        return wait_until(finished, timeout, nudge=nudge)
    except AssertionError:
        state = IngestJob.objects.get(pk=job_id).state
        raise AssertionError(f"job {job_id} still {state} after {timeout} s") from None


def test_real_worker_imports_an_upload(celery_worker, tenants, api, torch_logdir):
    client = api(tenants.bob)
    job = create_upload(client, torch_logdir).json()
    send_files(client, torch_logdir, job)
    r = client.post(f"/api/v1/uploads/{job['id']}/finish/")
    assert r.status_code == 202 and r.json()["state"] in ("pending", "running")
    done = _wait_job(job["id"], 60)
    assert done.state == "succeeded", done.error
    run = Run.objects.get(project=tenants.vision, source_path="torch_run")
    ours = stored_scalars(run)
    for key, pts in tb_scalars(torch_logdir / "torch_run").items():
        same_points(ours[key], pts)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkilled_worker_resumes_to_identical_data(
    transactional_db, tenants, api, settings, tmp_path: Path
):
    from tracker import tasks_ingest
    from tracker.celery import app

    if not os.environ.get("CELERY_BROKER_URL"):
        pytest.fail("CELERY_BROKER_URL must point at Redis")
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.control.purge()
    runs, tags, steps = 3, 40, 2500  # 300,000 points, flushed every 10,000
    root = tmp_path / "logs"
    write_scalar_logdir(root, runs, tags, steps)
    env = subprocess_env(
        {
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "TRACKER_INGEST_FLUSH_POINTS": "10000",
            "LOG_LEVEL": "INFO",
        }
    )
    first = start_worker(env, "victim", concurrency=1, pool="prefork")
    second = None
    try:
        client = api(tenants.bob)
        job = create_upload(client, root).json()
        send_files(client, root, job, chunk=1 << 20)
        assert client.post(f"/api/v1/uploads/{job['id']}/finish/").status_code == 202

        # Kill -9 once a run is part way through (some flushes committed, not all).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if (
                UploadFile.objects.filter(job_id=job["id"], bytes_parsed__gt=0)
                .exclude(parse_state__has_key="scanned_to")
                .exists()
            ):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the worker never started parsing")
        stop_group(first, signal.SIGKILL)
        assert first.returncode is not None
        state = IngestJob.objects.get(pk=job["id"])
        assert state.state == "running"
        partial = list(
            UploadFile.objects.filter(job_id=job["id"]).values_list(
                "bytes_parsed", "bytes_received"
            )
        )
        assert any(0 < p < r for p, r in partial), partial
        assert SeriesChunk.objects.exists()

        # A new worker; the reconciler (run periodically in production) re-sends the job.
        second = start_worker(env, "rescuer", concurrency=1, pool="prefork")
        done = _wait_job(
            job["id"],
            180,
            nudge=lambda: tasks_ingest.reconcile.apply_async(kwargs={"stale_after_seconds": 0}),
        )
        assert done.state == "succeeded", done.error
        assert done.summary["points"] == runs * tags * steps
        assert done.attempts >= 2
        check_scalar_logdir(tenants.vision, runs, tags, steps)
        assert all(
            f.bytes_parsed == f.bytes_received for f in UploadFile.objects.filter(job_id=job["id"])
        )
    finally:
        stop_group(first, signal.SIGKILL)
        if second is not None:
            stop_group(second, signal.SIGTERM)
        app.conf.task_always_eager = True

"""Redis restarted with queued jobs: the messages are gone (Redis keeps nothing on disk), the job
rows in PostgreSQL are not, and the reconciler re-queues them; every point is stored once.

A private redis-server on a free port stands in for the broker, so the shared one is never
touched. An upload finished while Redis is down still answers 202: the row is committed and
the reconciler sends its message later.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import stop_group
from tests.conftest import subprocess_env
from tests.faults.helpers import RedisServer
from tests.helpers import start_worker, wait_until
from tests.ingest_api.helpers import (
    check_scalar_logdir,
    create_upload,
    send_files,
    write_scalar_logdir,
)
from tracker.models import IngestJob

pytestmark = pytest.mark.timeout(180)

RUNS, TAGS, STEPS = 2, 5, 300


@pytest.fixture
def private_broker(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Point this process's Celery producer at a private redis-server."""
    from tracker.celery import app

    server = RedisServer().start()
    old = app.conf.broker_url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False

    def use(url: str) -> None:
        # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        app.conf.broker_url = url
        app._pool = None  # connection pools are cached per broker URL
        app.amqp._producer_pool = None

    use(server.url)
    yield server
    use(old)
    monkeypatch.undo()
    app.conf.task_always_eager = True
    server.kill()


def test_beat_runs_the_reconciler_and_workers_run_it_at_start() -> None:
    from django.conf import settings

    from tracker.celery import app

    tasks = {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "tracker.ingest.reconcile" in tasks
    assert "tracker.cleanup_stale_uploads" in tasks
    assert "tracker.ingest.reconcile" in {e["task"] for e in app.conf.beat_schedule.values()}
    from celery.signals import worker_ready

    assert any("reconcile" in repr(r) for r in worker_ready.receivers)


def test_redis_restart_loses_messages_reconciler_requeues(
    transactional_db: Any, tenants: Any, api: Any, private_broker: RedisServer, tmp_path: Path
) -> None:
    from tests.factories import ProjectFactory
    from tracker import tasks_ingest

    other = ProjectFactory(workspace=tenants.acme, slug="other")
    bob = api(tenants.bob)
    root = tmp_path / "logs"
    write_scalar_logdir(root, RUNS, TAGS, STEPS)

    # Job 1: finished with no worker running — its message waits in Redis.
    job1 = create_upload(bob, root).json()
    send_files(bob, root, job1)
    assert bob.post(f"/api/v1/uploads/{job1['id']}/finish/").status_code == 202
    assert private_broker.queue_length() >= 1

    # Redis dies (SIGKILL, nothing on disk): the queued message is gone.
    private_broker.kill()

    # Job 2: finished while Redis is down — still 202, the row is what counts.
    files = [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size}
        for p in sorted(root.rglob("*tfevents*"))
    ]
    r = bob.post("/api/v1/projects/acme/other/uploads/", {"files": files}, format="json")
    assert r.status_code == 201, r.content
    job2 = r.json()
    send_files(bob, root, job2)
    r = bob.post(f"/api/v1/uploads/{job2['id']}/finish/")
    assert r.status_code == 202, r.content

    # Redis back, empty.
    restarted = RedisServer(port=private_broker.port).start()
    private_broker.proc = restarted.proc
    assert restarted.queue_length() == 0
    worker = start_worker(
        subprocess_env({"CELERY_BROKER_URL": restarted.url, "CELERY_TASK_ALWAYS_EAGER": "0"}),
        "after-redis-restart",
    )
    try:
        import time

        time.sleep(3)  # the worker is up; with no messages nothing moves
        states = set(
            IngestJob.objects.filter(pk__in=[job1["id"], job2["id"]]).values_list(
                "state", flat=True
            )
        )
        assert states == {"pending"}

        # The periodic reconciler (beat, every minute; stale after 2 min in production).
        def nudge() -> None:
            tasks_ingest.reconcile.apply_async(kwargs={"stale_after_seconds": 0})

        def done() -> bool:
            rows = IngestJob.objects.filter(pk__in=[job1["id"], job2["id"]])
            return all(j.state in ("succeeded", "failed") for j in rows)

        nudge()
        wait_until(done, 120, nudge=nudge)
        for jid in (job1["id"], job2["id"]):
            job = IngestJob.objects.get(pk=jid)
            assert job.state == "succeeded", job.error
            assert job.summary["points"] == RUNS * TAGS * STEPS
        check_scalar_logdir(tenants.vision, RUNS, TAGS, STEPS)  # every point exactly once
        check_scalar_logdir(other, RUNS, TAGS, STEPS)
    finally:
        stop_group(worker, signal.SIGTERM)

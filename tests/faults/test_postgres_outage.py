"""PostgreSQL "restarted" during live logging: a TCP proxy between gunicorn and PostgreSQL cuts
every connection and refuses new ones for a few seconds mid-run (the shared server itself is
never touched). The server answers 503 meanwhile, the client retries, and after the outage every
acknowledged point is stored exactly once."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from django.db import connection

from tests.conftest import subprocess_env
from tests.faults.helpers import TcpProxy
from tests.helpers import check_series
from tests.live.conftest import Gunicorn
from tracker.models import Run, Series

pytestmark = [pytest.mark.timeout(240)]


def value(key: str, step: int) -> float:
    return step * 0.25 + len(key)


def test_database_outage_mid_run_loses_and_duplicates_nothing(
    transactional_db: Any,
    s3_storage: Any,
    tenants: Any,
    token_for: Any,
    client_env: Any,
) -> None:
    import tracker_client

    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    env = subprocess_env({"CELERY_TASK_ALWAYS_EAGER": "1", "LOG_LEVEL": "WARNING"})
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(f":{db['PORT'] or 5432}/", f":{proxy.port}/")
    server = Gunicorn(env, workers=2, threads=4).start()
    token = token_for(tenants.bob)
    from tracker.services.sharing import create_share_link

    _, share_secret = create_share_link(project=tenants.vision, user=tenants.alice)
    try:
        run = tracker_client.init(
            project="acme/vision", name="db-outage", url=server.url, token=token, telemetry=False
        )
        n, keys = 30_000, ["loss", "acc/top1"]
        done = threading.Event()

        def train() -> None:
            for step in range(n):
                run.log({k: value(k, step) for k in keys}, step=step)
                if step % 1000 == 999:
                    time.sleep(0.15)  # ~4.5 s of training, batches flushing all along
            done.set()

        t = threading.Thread(target=train)
        t.start()
        time.sleep(1.2)
        stored_before = list(
            Series.objects.filter(run_id=run.id, key="loss").values_list("count", flat=True)
        )
        proxy.outage()  # every connection cut, new ones refused
        try:
            # Meanwhile the API says "unavailable, retry", never a bare 500.
            r = httpx.post(
                f"{server.url}/api/v1/runs/{run.id}/metrics/",
                json={"series": [{"key": "probe", "steps": [0], "values": [1.0]}]},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "probe-1"},
                timeout=30,
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable" and r.headers["Retry-After"]
            # ... and a web page (a share link's project page) says so too.
            page = httpx.get(f"{server.url}/s/{share_secret}/", timeout=30)
            assert page.status_code == 503, page.text[:300]
            assert "briefly unavailable" in page.text and page.headers["Retry-After"]
            time.sleep(3.0)
        finally:
            proxy.restore()
        t.join(120)
        assert done.is_set()
        run.finish(timeout=120)
        assert proxy.cuts >= 1 and proxy.refused >= 1  # the outage really happened
        assert stored_before in ([], *[[c] for c in range(n)])  # mid-run, not after
        check_series(run.id, keys, n, value)
        assert not Series.objects.filter(run_id=run.id, key="probe").exists()
        assert Run.objects.get(pk=run.id).status == "finished"
        # The server recovered on its own: plain reads work again on every worker.
        for _ in range(8):
            r = httpx.get(
                f"{server.url}/api/v1/runs/{run.id}/", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200
    finally:
        server.stop()
        proxy.close()

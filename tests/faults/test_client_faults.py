"""Faults around the real client (tracker_client) and a real gunicorn:

* gunicorn SIGKILLed in the middle of `tracker upload`: run again, the CLI resumes from the
  server's offsets and the imported data is identical to the logdir, every point once;
* the client offline for 60 s mid-run (a proxy refusing every connection): it spools to its
  journal and delivers everything exactly once when the server is back (10-minute variant:
  bench/faults/offline_client.py);
* the client process SIGKILLed mid-run: what it had journaled is delivered by `tracker sync`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.faults.helpers import TcpProxy
from tests.helpers import check_series, wait_until
from tests.ingest_api.helpers import check_scalar_logdir, write_scalar_logdir
from tests.live.conftest import Gunicorn
from tracker.models import IngestJob, Run, Series, UploadFile
from tracker.selectors.series import read_points

TRACKER = str(Path(ROOT) / ".venv" / "bin" / "tracker")


def value(key: str, step: int) -> float:
    return step * 0.125 + len(key)


@pytest.mark.timeout(300)
def test_gunicorn_killed_mid_upload_cli_resumes_identical(
    tenants: Any,
    token_for: Any,
    gunicorn: Gunicorn,
    client_env: Any,
    tmp_path: Path,
) -> None:
    runs, tags, steps = 3, 20, 3000  # ~6 MB of tfevents: the upload takes a while
    root = tmp_path / "logs"
    write_scalar_logdir(root, runs, tags, steps)
    env = {
        **os.environ,
        "TRACKER_URL": gunicorn.url,
        "TRACKER_TOKEN": token_for(tenants.bob),
        "TRACKER_CACHE_DIR": str(tmp_path / "cache"),
    }
    cmd = [TRACKER, "upload", str(root), "--project", "acme/vision", "--no-progress"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill the server once some bytes, not all, have arrived.
    total = sum(p.stat().st_size for p in root.rglob("*tfevents*"))
    wait_until(
        lambda: 0 < sum(UploadFile.objects.values_list("bytes_received", flat=True)) < total,
        60,
        interval=0.01,
    )
    gunicorn.kill()
    received_at_kill = sum(UploadFile.objects.values_list("bytes_received", flat=True))
    assert 0 < received_at_kill < total
    # The CLI retries for ~10 s; the server is back within that (a supervisor restart).
    time.sleep(1.0)
    gunicorn.start()
    _, err = first.communicate(timeout=180)
    print(f"first tracker upload exit status after the kill: {first.returncode}")
    if first.returncode != 0:
        # It gave up: the user runs the same command again, which resumes from the offsets.
        assert b"error" in err, err[-2000:]
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stderr[-2000:]
    check_scalar_logdir(tenants.vision, runs, tags, steps)
    assert Run.objects.filter(project=tenants.vision).count() == runs
    assert all(f.bytes_parsed == f.bytes_received for f in UploadFile.objects.all())
    assert IngestJob.objects.filter(state="succeeded").exists()
    # Once more: nothing to send, nothing changes.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    check_scalar_logdir(tenants.vision, runs, tags, steps)


@pytest.mark.slow  # 60 s offline; the 10-minute variant is bench/faults/offline_client.py
@pytest.mark.timeout(300)
def test_client_offline_60s_delivers_exactly_once(
    tenants: Any,
    token_for: Any,
    gunicorn: Gunicorn,
    client_env: Any,
    monkeypatch: Any,
) -> None:
    import tracker_client

    monkeypatch.setenv("TRACKER_OFFLINE_GRACE", "2")
    proxy = TcpProxy(("127.0.0.1", gunicorn.port))
    try:
        run = tracker_client.init(
            project="acme/vision",
            name="offline-60",
            url=f"http://127.0.0.1:{proxy.port}",
            token=token_for(tenants.bob),
            telemetry=False,
        )
        keys = ["loss", "val/acc"]
        n_before, n_offline, n_after = 5_000, 30_000, 5_000
        step = 0
        for step in range(n_before):
            run.log({k: value(k, step) for k in keys}, step=step)
        assert run.flush(timeout=60)
        proxy.outage()
        offline_until = time.monotonic() + 60
        s = n_before
        while time.monotonic() < offline_until:  # training goes on while offline
            if s < n_before + n_offline:
                run.log({k: value(k, s) for k in keys}, step=s)
                s += 1
                if s % 500 == 0:
                    time.sleep(0.5)
            else:
                time.sleep(0.5)
        assert s == n_before + n_offline
        stored_offline = Series.objects.get(run_id=run.id, key="loss").count
        assert stored_offline < n_before + n_offline  # it really was offline
        proxy.restore()
        for step in range(s, s + n_after):
            run.log({k: value(k, step) for k in keys}, step=step)
        run.finish(timeout=180)
    finally:
        proxy.close()
    assert proxy.refused > 0
    check_series(run.id, keys, n_before + n_offline + n_after, value)
    assert Run.objects.get(pk=run.id).status == "finished"


KILLED_CLIENT = textwrap.dedent(
    """
    import sys, time, tracker_client
    n = int(sys.argv[1])
    run = tracker_client.init(project="acme/vision", name="killed-client", telemetry=False)
    for step in range(n):
        run.log({"loss": step * 0.125 + 4, "acc": step * 0.125 + 3}, step=step)
    run.flush(timeout=60)   # offline: everything so far is now in the fsynced journal
    print("JOURNALED", flush=True)
    time.sleep(600)         # SIGKILLed here, never finishes
    """
)


@pytest.mark.timeout(240)
def test_sigkilled_client_journal_is_delivered_by_sync(
    tenants: Any,
    token_for: Any,
    gunicorn: Gunicorn,
    tmp_path: Path,
) -> None:
    proxy = TcpProxy(("127.0.0.1", gunicorn.port))
    proxy.outage()  # the server is unreachable for the whole life of the client
    env = {
        **os.environ,
        "TRACKER_URL": f"http://127.0.0.1:{proxy.port}",
        "TRACKER_TOKEN": token_for(tenants.bob),
        "TRACKER_CACHE_DIR": str(tmp_path / "cache"),
        "TRACKER_CONFIG_DIR": str(tmp_path / "config"),
        "TRACKER_OFFLINE_GRACE": "1",
    }
    n = 20_000
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        line = b""
        deadline = time.monotonic() + 120
        while b"JOURNALED" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
        assert b"JOURNALED" in line, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not Run.objects.filter(name="killed-client").exists()
    proxy.restore()
    try:
        sync = subprocess.run(
            [TRACKER, "sync"], env=env, capture_output=True, text=True, timeout=180
        )
        assert sync.returncode == 0, sync.stdout[-1000:] + sync.stderr[-2000:]
        run = Run.objects.get(name="killed-client")
        for key, offset in (("loss", 4), ("acc", 3)):
            series = Series.objects.get(run=run, key=key)
            pts = read_points(series)
            assert series.count == len(pts) == n
            assert pts.steps.tolist() == list(range(n))
            assert pts.values.tolist() == [s * 0.125 + offset for s in range(n)]
        # A second sync finds nothing left to send and changes nothing.
        again = subprocess.run(
            [TRACKER, "sync"], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert Series.objects.get(run=run, key="loss").count == n
        assert Run.objects.filter(name="killed-client").count() == 1
    finally:
        proxy.close()

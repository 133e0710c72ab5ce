"""Faults and concurrency with the real client: a server killed and restarted mid-run, a proxy
that loses responses after the server stored the batch, many writers at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from tests.helpers import check_series
from tracker.models import IdempotencyRecord, Run, Series

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def value(key: str, step: int) -> float:
    return step * 0.5 + len(key)


def test_server_killed_and_restarted_mid_run(tenants, token_for, gunicorn, client_env, monkeypatch):
    import tracker_client

    monkeypatch.setenv("TRACKER_OFFLINE_GRACE", "1")
    run = tracker_client.init(
        project="acme/vision", url=gunicorn.url, token=token_for(tenants.bob), telemetry=False
    )
    n, keys = 40_000, ["a", "b/c"]
    done = threading.Event()

    def train() -> None:
        for step in range(n):
            run.log({k: value(k, step) for k in keys}, step=step)
            if step % 1000 == 0:
                time.sleep(0.1)  # ~4 s of "training"
        done.set()

    t = threading.Thread(target=train)
    t.start()
    time.sleep(1.0)
    gunicorn.kill()
    stored_at_kill = Series.objects.filter(run_id=run.id, key="a").values_list("count", flat=True)
    assert list(stored_at_kill) in ([], *[[c] for c in range(n)])  # killed mid-run
    time.sleep(2.0)  # training goes on, the client retries / spools to its journal
    gunicorn.start()
    t.join()
    run.finish(timeout=120)
    assert done.is_set()
    check_series(run.id, keys, n, value)
    assert Run.objects.get(pk=run.id).status == "finished"


class DroppingProxy:
    """Forwards HTTP/1.1 requests to the server; for the first `drops` metric batches it reads
    the server's whole response (the batch is stored) and then closes the client connection
    instead of relaying it, like a load balancer dying at the wrong moment."""

    def __init__(self, upstream_port: int, drops: int, drop_create: bool = False) -> None:
        self.upstream_port = upstream_port
        self.drops_left = drops
        self.drop_create = drop_create
        self.dropped = 0
        self.replayed = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_message(f: Any) -> bytes | None:
        head = b""
        while True:
            line = f.readline(65536)
            if not line:
                return None
            head += line
            if line in (b"\r\n", b"\n"):
                break
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, val = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(val.strip())
            if name.strip().lower() == b"transfer-encoding":
                raise AssertionError("chunked bodies are not used by these endpoints")
        return head + (f.read(length) if length else b"")

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        cf, uf = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                request = self._read_message(cf)
                if request is None:
                    return
                upstream.sendall(request)
                response = self._read_message(uf)
                if response is None:
                    return
                first_line = request.split(b"\r\n", 1)[0]
                with self.lock:
                    if b"Idempotent-Replayed: true" in response:
                        self.replayed += 1
                    drop = b"/metrics/" in first_line and self.drops_left > 0
                    if drop:
                        self.drops_left -= 1
                        self.dropped += 1
                    elif self.drop_create and first_line.startswith(b"POST /api/v1/projects/"):
                        self.drop_create = False
                        drop = True
                if drop:
                    return  # stored upstream, never answered
                client.sendall(response)
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.sock.close()


def test_lost_responses_do_not_duplicate(tenants, token_for, gunicorn, client_env):
    import tracker_client

    proxy = DroppingProxy(gunicorn.port, drops=3, drop_create=True)
    try:
        run = tracker_client.init(
            project="acme/vision",
            name="lossy",
            url=proxy.url,
            token=token_for(tenants.bob),
            telemetry=False,
        )
        n, keys = 30_000, ["x", "y"]
        for step in range(n):
            run.log({k: value(k, step) for k in keys}, step=step)
            if step % 5000 == 4999:
                run.flush()  # several batches, so several are dropped
        run.finish(timeout=120)
    finally:
        proxy.close()
    assert proxy.dropped == 3
    assert proxy.replayed >= 3  # each retry was answered from the idempotency record
    check_series(run.id, keys, n, value)
    assert not proxy.drop_create  # the create's response was lost too ...
    assert Run.objects.filter(name="lossy").count() == 1  # ... and still one run
    assert IdempotencyRecord.objects.filter(scope=f"run:{run.id}:metrics").count() >= 3


WORKER = textwrap.dedent(
    """
    import sys, tracker_client
    i, n = int(sys.argv[1]), int(sys.argv[2])
    run = tracker_client.init(project="acme/vision", name=f"proc-{i}", telemetry=False)
    keys = [f"k{j}" for j in range(5)]
    for step in range(n):
        run.log({k: step * 0.5 + len(k) for k in keys}, step=step)
    run.finish(timeout=300)
    print(run.id)
    """
)


def test_eight_processes_eight_runs(tenants, token_for, gunicorn, client_env, tmp_path):
    import os

    env = {
        **os.environ,
        "TRACKER_URL": gunicorn.url,
        "TRACKER_TOKEN": token_for(tenants.bob),
        "TRACKER_CACHE_DIR": str(tmp_path / "cache"),
    }
    n = 20_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    run_ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
        run_ids.append(int(out.decode().split()[-1]))
    assert len(set(run_ids)) == 8
    for run_id in run_ids:
        check_series(run_id, [f"k{j}" for j in range(5)], n, value)


def test_four_threads_one_run(tenants, token_for, gunicorn, client_env):
    import tracker_client

    run = tracker_client.init(
        project="acme/vision", url=gunicorn.url, token=token_for(tenants.bob), telemetry=False
    )
    n = 25_000

    def worker(t: int) -> None:
        key = f"thread{t}/loss"
        for step in range(n):
            run.log_at({key: value(key, step)}, step=step)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.finish(timeout=120)
    check_series(run.id, [f"thread{t}/loss" for t in range(4)], n, value)

"""Helpers shared across test packages: a Celery worker in a subprocess, waiting for a condition,
checking a logged series point by point, posting a metrics batch."""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.harness import spawn, worker_command
from tests.conftest import ARTIFACTS


def start_worker(
    env: dict[str, str], name: str, concurrency: int = 2, pool: str = "threads"
) -> subprocess.Popen[bytes]:
    """A real Celery worker `name` on `env` (see tests.conftest.subprocess_env), in its own
    process group: `bench.harness.stop_group` (SIGKILL too) reaches its pool children."""
    cmd = worker_command(concurrency, pool=pool, name=name, loglevel="INFO")
    return spawn(cmd, ARTIFACTS / f"worker-{name}.log", env)


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, nudge: Any = None) -> Any:
    """Poll `predicate` until it returns something true (returned); call `nudge` every 3 s."""
    deadline = time.monotonic() + timeout
    last_nudge = 0.0
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if nudge is not None and time.monotonic() - last_nudge > 3:
            nudge()
            last_nudge = time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def check_series(run_id: int, keys: list[str], n: int, value: Callable[[str, int], float]) -> None:
    """Every key of the run holds steps 0..n-1 exactly once, with `value(key, step)` each."""
    from tracker.models import Series
    from tracker.selectors.series import read_points

    for key in keys:
        series = Series.objects.get(run_id=run_id, key=key)
        pts = read_points(series)
        assert series.count == len(pts) == n, (key, series.count, len(pts))
        assert pts.steps.tolist() == list(range(n))
        assert pts.values.tolist() == [value(key, s) for s in range(n)]


def post_metrics(
    client: Any, run: Any, raw: bytes, content_type: str, key: str | None = None, gz: bool = False
) -> Any:
    """POST a metrics body (JSON or binary columns) as the client sends it: optionally gzipped,
    optionally with an Idempotency-Key."""
    headers: dict[str, str] = {}
    if key:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    if gz:
        raw = gzip.compress(raw)
        headers["HTTP_CONTENT_ENCODING"] = "gzip"
    return client.post(f"/api/v1/runs/{run.pk}/metrics/", raw, content_type=content_type, **headers)

"""Helpers of the live-logging tests: a run of acme/vision and small image fixtures."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import free_port
from tests.conftest import ARTIFACTS, ROOT, subprocess_env


@pytest.fixture
def run(tenants: Any) -> Any:
    from tests.factories import RunFactory

    return RunFactory(project=tenants.vision, created_by=tenants.alice)


@pytest.fixture
def other_run(tenants: Any) -> Any:
    from tests.factories import RunFactory

    return RunFactory(project=tenants.secret, created_by=tenants.mallory)


def png_bytes(width: int = 8, height: int = 8, color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def image_bytes(fmt: str, width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


# --- a real server: gunicorn in a subprocess on the test database ---------------------------------


class Gunicorn:
    """gunicorn serving tracker.wsgi on 127.0.0.1; can be killed and restarted on its port."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.workers, self.threads = workers, threads
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        ARTIFACTS.mkdir(exist_ok=True)
        log = open(ARTIFACTS / f"gunicorn-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(Path(ROOT) / ".venv" / "bin" / "gunicorn"),
                "tracker.wsgi",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--timeout",
                "120",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes the workers too
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/api/v1/me/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not come up")

    def kill(self) -> None:
        """SIGKILL, like a crashed host: no graceful shutdown of in-flight requests."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_env(transactional_db: Any, s3_storage: Any) -> dict[str, str]:
    return subprocess_env({"CELERY_TASK_ALWAYS_EAGER": "1", "LOG_LEVEL": "WARNING"})


@pytest.fixture
def gunicorn(server_env: dict[str, str]) -> Iterator[Gunicorn]:
    server = Gunicorn(server_env).start()
    yield server
    server.stop()


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's journal and config live in this test's temporary directory."""
    cache = tmp_path / "client-cache"
    monkeypatch.setenv("TRACKER_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRACKER_CONFIG_DIR", str(tmp_path / "client-config"))
    for name in ("TRACKER_URL", "TRACKER_TOKEN", "TRACKER_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    return cache

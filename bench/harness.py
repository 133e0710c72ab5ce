"""What the benchmarks start on loopback: a moto S3 server, gunicorn + a Celery worker, a database.

    s3 = S3Server(logs)
    env = stack_env(ensure_database("tracker_bench_x"), "redis://127.0.0.1:6379/4", s3, bucket)
    s3.start().create_bucket(bucket)
    dep = Deployment(env, logs, web_workers=2, concurrency=2).start()
    try: ...  # dep.url, dep.web, dep.worker
    finally: dep.stop(); s3.stop()

Nothing here imports Django at module level: the benchmarks call it before `django.setup()`, and
the test suite (tests/conftest.py) starts its S3 server with `S3Server` too. `bench_owner` and
`fresh_project` are the exception: they need `django.setup()` done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
ACCESS_LOG_FORMAT = "%(m)s %(U)s %(s)s %(D)s"  # method, path, status, microseconds


def cpu_reference_ms() -> float:
    """Best of 5 of a fixed pure-Python loop, in ms: how fast this machine's CPU is today.

    Absolute targets (points/s, ms) are only comparable between machines with a similar figure:
    hosts of the same kind have been seen to differ by 2x.
    """
    import timeit

    return min(timeit.repeat("sum(i * i for i in range(1_000_000))", number=1, repeat=5)) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


# --- processes ---------------------------------------------------------------------------------


def spawn(
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    append: bool = True,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in the repository root, stdout and stderr to `log`.

    With `new_session` it leads a process group of its own: `stop_group` then reaches its
    children too (gunicorn workers, Celery pool processes).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def stop_group(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """Send `sig` to the process group `proc` leads (see `spawn`); SIGKILL it after `timeout` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def worker_command(
    concurrency: int = 2,
    *,
    pool: str = "prefork",
    name: str | None = None,
    loglevel: str = "WARNING",
) -> list[str]:
    """A Celery worker of the tracker app (on the broker CELERY_BROKER_URL names)."""
    return [
        PY, "-m", "celery", "-A", "tracker", "worker",
        "-c", str(concurrency), "-P", pool,
        *(["-n", f"{name}@%h"] if name else []),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", loglevel,
    ]  # fmt: skip


def gunicorn_command(
    port: int, *, workers: int = 2, threads: int = 1, access_log: Path | None = None
) -> list[str]:
    """gunicorn serving tracker.wsgi on 127.0.0.1:`port` with the production config file."""
    cmd = [
        PY, "-m", "gunicorn", "tracker.wsgi", "-c", "python:tracker.gunicorn_conf",
        "-b", f"127.0.0.1:{port}", "-w", str(workers), "--threads", str(threads),
        "--timeout", "120",
    ]  # fmt: skip
    if access_log is not None:
        cmd += ["--access-logfile", str(access_log), "--access-logformat", ACCESS_LOG_FORMAT]
    return cmd


def profiled(cmd: list[str], report: Path) -> list[str]:
    """`cmd` (`python -m ...`) under pyinstrument, its report written to `report` (.html: HTML)."""
    assert cmd[:2] == [PY, "-m"], cmd
    renderer = ["-r", "html"] if report.suffix == ".html" else []
    return [PY, "-m", "pyinstrument", "-o", str(report), *renderer, *cmd[1:]]


class Deployment:
    """What a deployment runs besides its database, broker and S3: gunicorn (tracker.wsgi) and a
    Celery worker (prefork), both on `env`, output in `logs`/gunicorn.log and worker.log.

    `loglevel` is the worker's (--loglevel and LOG_LEVEL); gunicorn writes its access lines
    (`ACCESS_LOG_FORMAT`) to the file `access_log` if given; `profile_web` / `profile_worker`
    run that process under pyinstrument (reports web-profile.html / worker-profile.txt in `logs`).
    """

    def __init__(
        self,
        env: dict[str, str],
        logs: Path,
        *,
        web_workers: int = 2,
        threads: int = 1,
        concurrency: int = 2,
        worker_name: str | None = None,
        loglevel: str = "WARNING",
        access_log: Path | None = None,
        profile_web: bool = False,
        profile_worker: bool = False,
    ) -> None:
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = access_log
        self.web_cmd = gunicorn_command(
            self.port, workers=web_workers, threads=threads, access_log=self.access_log
        )
        self.worker_cmd = worker_command(concurrency, name=worker_name, loglevel=loglevel)
        self.worker_env = {**env, "LOG_LEVEL": loglevel}
        if profile_web:
            self.web_cmd = profiled(self.web_cmd, logs / "web-profile.html")
        if profile_worker:
            self.worker_cmd = profiled(self.worker_cmd, logs / "worker-profile.txt")
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self) -> Deployment:
        """Worker first (it connects to the broker meanwhile), then gunicorn, up when it listens."""
        self.start_worker()
        self.start_web()
        return self

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.worker = spawn(
            self.worker_cmd, self.logs / "worker.log", self.worker_env, append=False
        )
        return self.worker

    def start_web(self) -> subprocess.Popen[bytes]:
        if self.access_log is not None:
            self.access_log.parent.mkdir(parents=True, exist_ok=True)
            self.access_log.write_bytes(b"")
        self.web = spawn(self.web_cmd, self.logs / "gunicorn.log", self.env, append=False)
        wait_port(self.port)
        return self.web

    def stop(self) -> None:
        stop_group(self.web)
        stop_group(self.worker)


# --- S3 -----------------------------------------------------------------------------------------


class S3Server:
    """moto in server mode on a free loopback port: S3 over HTTP, as boto3 talks to AWS or MinIO.

    Its output goes to `logs`/`log_name` (default moto-<port>.log). Any key pair is accepted;
    `KEY` is used for both.
    """

    KEY = "testing"
    REGION = "us-east-1"

    def __init__(self, logs: Path, log_name: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logs / (log_name or f"moto-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        cmd = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        # In our own process group: a Ctrl-C of the bench or test run reaches it as well.
        self.proc = spawn(cmd, self.log, append=False, new_session=False)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def create_bucket(self, bucket: str) -> S3Server:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.REGION,
            aws_access_key_id=self.KEY,
            aws_secret_access_key=self.KEY,
        ).create_bucket(Bucket=bucket)
        return self

    def storage_conf(self, bucket: str) -> dict[str, str]:
        """Django setting TRACKER_STORAGE: blobs in `bucket` on this server, no prefix."""
        return {
            "BLOB_DIR": "",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.url,
            "S3_PUBLIC_ENDPOINT_URL": self.url,
            "S3_REGION": self.REGION,
            "S3_ACCESS_KEY_ID": self.KEY,
            "S3_SECRET_ACCESS_KEY": self.KEY,
            "S3_PREFIX": "",
        }

    def env(self, bucket: str) -> dict[str, str]:
        """The same as environment variables (tracker/settings.py), for a server process."""
        conf = self.storage_conf(bucket)
        return {"TRACKER_BLOB_DIR": conf.pop("BLOB_DIR"), **conf}


# --- database and environment ------------------------------------------------------------------


def ensure_database(name: str, *, fresh: bool = False, env: dict[str, str] | None = None) -> str:
    """PostgreSQL database `name` on BENCH_PG, created when missing (dropped first when `fresh`),
    migrated (`manage.py migrate` in a subprocess, on `env`); returns its DATABASE_URL."""
    import psycopg

    url = f"{PG}/{name}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **(env or {}), "DATABASE_URL": url},
        check=True,
    )
    return url


def stack_env(
    database_url: str, broker: str, s3: S3Server, bucket: str, **extra: str
) -> dict[str, str]:
    """This process's environment plus a real deployment's: PostgreSQL, Celery on Redis (not
    eager), blobs on `s3`; then `extra`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tracker.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        **s3.env(bucket),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


# --- data (after django.setup()) -----------------------------------------------------------------


def bench_owner() -> tuple[Any, Any]:
    """(user `bench`, workspace `bench` it owns), created when missing."""
    from django.contrib.auth import get_user_model

    from tracker.models import Membership, Role, Workspace

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"email": "bench@example.com"}
    )
    ws, _ = Workspace.objects.get_or_create(slug="bench", defaults={"name": "bench"})
    Membership.objects.get_or_create(workspace=ws, user=user, defaults={"role": Role.OWNER})
    return user, ws


def fresh_project() -> tuple[Any, str]:
    """(a new project of workspace `bench`, a new API token of its owner `bench`)."""
    import uuid

    from tracker.models import Project
    from tracker.services.sharing import create_token

    user, ws = bench_owner()
    slug = f"p{uuid.uuid4().hex[:10]}"
    project = Project.objects.create(workspace=ws, slug=slug, name=slug)
    _, token = create_token(user=user, name="bench")
    return project, token

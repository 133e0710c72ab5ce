"""Test harness: real PostgreSQL (DATABASE_URL), real Redis and Celery, a real S3 server.

The S3 server is moto in server mode, started here as a subprocess on a free loopback port
(bench.harness.S3Server, which the benchmarks use too); the code talks to it through boto3 over
HTTP exactly as it would to AWS or MinIO. Named users
make tenancy tests read naturally: alice owns workspace `acme`, bob contributes, carol views,
mallory owns the other workspace `umbrella`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import S3Server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(ARTIFACTS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> str:
    bucket = f"tracker-test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return bucket


@pytest.fixture(autouse=True)
def s3_storage(request: pytest.FixtureRequest) -> Iterator[dict[str, str] | None]:
    """Every Django test stores blobs on the real S3 server, under a prefix of its own."""
    if not _wants_db(request):
        yield None
        return
    settings = request.getfixturevalue("settings")
    server: S3Server = request.getfixturevalue("s3_server")
    conf = server.storage_conf(request.getfixturevalue("s3_bucket"))
    conf["S3_PREFIX"] = f"t-{uuid.uuid4().hex[:16]}/"
    settings.TRACKER_STORAGE = conf
    yield conf


def _wants_db(request: pytest.FixtureRequest) -> bool:
    names = set(request.fixturenames)
    wanted = {
        "db",
        "transactional_db",
        "live_server",
        "tenants",
        "api",
        "token_for",
        "celery_worker",
    }
    return bool(names & wanted) or bool(request.node.get_closest_marker("django_db"))


@pytest.fixture(autouse=True)
def fast_password_hasher(request: pytest.FixtureRequest) -> None:
    """PBKDF2 at full strength costs ~0.3 s a user; tests of hashing opt back in explicitly."""
    if _wants_db(request) and not request.node.get_closest_marker("real_password_hasher"):
        settings = request.getfixturevalue("settings")
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_throttles(request: pytest.FixtureRequest) -> None:
    """Failure throttles (login, share links) count in the cache; every test starts at zero.

    Only the in-process cache is cleared: a Redis cache (REDIS_URL) may be shared.
    """
    if _wants_db(request):
        from django.core.cache import caches
        from django.core.cache.backends.locmem import LocMemCache

        if isinstance(caches["default"], LocMemCache):
            caches["default"].clear()


@pytest.fixture
def local_storage(settings: Any, tmp_path: Path) -> dict[str, str]:
    conf = {"BLOB_DIR": str(tmp_path / "blobs"), "S3_BUCKET": ""}
    settings.TRACKER_STORAGE = conf
    return conf


# --- named users --------------------------------------------------------------------------------
@pytest.fixture
def tenants(db: Any) -> Any:
    from tests.factories import MembershipFactory, ProjectFactory, UserFactory, WorkspaceFactory
    from tracker.models import Role

    class T:
        pass

    t = T()
    t.alice = UserFactory(username="alice")
    t.bob = UserFactory(username="bob")
    t.carol = UserFactory(username="carol")
    t.mallory = UserFactory(username="mallory")
    t.acme = WorkspaceFactory(slug="acme")
    t.umbrella = WorkspaceFactory(slug="umbrella")
    MembershipFactory(workspace=t.acme, user=t.alice, role=Role.OWNER)
    MembershipFactory(workspace=t.acme, user=t.bob, role=Role.CONTRIBUTOR)
    MembershipFactory(workspace=t.acme, user=t.carol, role=Role.VIEWER)
    MembershipFactory(workspace=t.umbrella, user=t.mallory, role=Role.OWNER)
    t.vision = ProjectFactory(workspace=t.acme, slug="vision")
    t.secret = ProjectFactory(workspace=t.umbrella, slug="secret")
    return t


@pytest.fixture
def token_for(db: Any):  # type: ignore[no-untyped-def]
    from tracker.services.sharing import create_token

    def make(user: Any, **kwargs: Any) -> str:
        _, secret = create_token(user=user, name=kwargs.pop("name", "test"), **kwargs)
        return secret

    return make


@pytest.fixture
def api(token_for):  # type: ignore[no-untyped-def]
    """api(user) -> a DRF APIClient authenticated with a fresh personal token of that user."""
    from rest_framework.test import APIClient

    def make(user: Any = None, **token_kwargs: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, **token_kwargs)}")
        return client

    return make


# --- a real Celery worker -------------------------------------------------------------------------
@pytest.fixture
def celery_worker(transactional_db: Any, settings: Any) -> Iterator[Any]:
    """A real worker consuming from Redis in this process (tasks see the test database)."""
    from celery.contrib.testing.worker import start_worker

    from tracker.celery import app

    if not os.environ.get("CELERY_BROKER_URL"):
        pytest.fail("CELERY_BROKER_URL must point at Redis for worker tests (scripts/test sets it)")
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
    ) as worker:
        yield worker
    app.conf.task_always_eager = True


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server/worker subprocess that must use this test's database and S3."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    conf = settings.TRACKER_STORAGE
    for key in (
        "S3_BUCKET",
        "S3_ENDPOINT_URL",
        "S3_PUBLIC_ENDPOINT_URL",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "S3_PREFIX",  # tests share one bucket, each under its own prefix
    ):
        env[key] = conf.get(key, "")
    env["TRACKER_BLOB_DIR"] = conf.get("BLOB_DIR", "")
    env.update(extra or {})
    return env


# --- secrets never reach the logs --------------------------------------------------------------
class _SecretScan(logging.Handler):
    """Collects every log line of the whole suite that still carries a token or share secret."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        from tracker.logging_filters import SECRET_RE

        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        if SECRET_RE.search(text) and "[redacted]" not in text:
            self.leaks.append(f"{record.name}: {text[:200]}")


_SCAN = _SecretScan()


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(_SCAN)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SCAN.leaks:
        print("\nSECRETS FOUND IN LOGS:\n" + "\n".join(_SCAN.leaks[:20]))
        session.exitstatus = 1

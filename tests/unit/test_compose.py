"""docker-compose.yml stays valid and complete, though no Docker engine runs here.

`docker-compose config` (Debian's package, installed by scripts/install_system.sh) validates
the file against the Compose schema and resolves anchors and variables without an engine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: run scripts/install --test"
    out = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_is_valid_and_has_every_service():
    services = _config()["services"]
    assert {"postgres", "redis", "minio", "create-bucket", "web", "worker"} <= set(services)
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    # web runs the image's CMD (gunicorn); the worker overrides it with celery.
    assert "command" not in services["web"]
    assert "gunicorn" in (ROOT / "Dockerfile").read_text().split("CMD", 1)[1]
    worker = services["worker"]["command"]
    assert "celery" in (worker if isinstance(worker, str) else " ".join(worker))

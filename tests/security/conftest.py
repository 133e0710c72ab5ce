"""Shared data of the security tests: a run of acme/vision with something of every kind in it,
and the same for mallory's umbrella/secret, so cross-tenant checks have real ids to try."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile


def png_bytes(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Filled:
    run: Any
    image_id: int
    artifact_id: int
    job_id: int
    link_id: int
    link_secret: str


def fill(client: Any, project: str, name: str) -> Filled:
    """A run with params, metrics, text, an image, an artifact and an upload job, via the API."""
    from tracker.models import Run, ShareLink

    r = client.post(
        f"/api/v1/projects/{project}/runs/",
        {"name": name, "tags": ["t"], "params": {"lr": 0.1}},
        format="json",
    )
    assert r.status_code == 201, r.content
    run = Run.objects.get(pk=r.json()["id"])
    body = {"series": [{"key": "loss", "steps": [0, 1, 2], "values": [0.9, 0.5, 0.1]}]}
    assert client.post(f"/api/v1/runs/{run.pk}/metrics/", body, format="json").status_code == 200
    text = {"items": [{"key": "note", "step": 0, "value": "hello"}]}
    assert client.post(f"/api/v1/runs/{run.pk}/text/", text, format="json").status_code == 200
    meta = [{"key": "img", "step": 0, "caption": "c", "field": "f0"}]
    r = client.post(
        f"/api/v1/runs/{run.pk}/images/",
        {"meta": json.dumps(meta), "f0": SimpleUploadedFile("a.png", png_bytes())},
    )
    assert r.status_code == 201, r.content
    image_id = r.json()["images"][0]["id"]
    data = b"weights"
    r = client.post(
        f"/api/v1/runs/{run.pk}/artifacts/",
        {"path": "ckpt/model.pt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        format="json",
    )
    assert r.status_code == 201, r.content
    artifact_id = r.json()["id"]
    r = client.post(
        f"/api/v1/projects/{project}/uploads/",
        {"runs_mode": "merge", "files": [{"path": "r1/events.out.tfevents.1.host", "size": 10}]},
        format="json",
    )
    assert r.status_code == 201, r.content
    job_id = r.json()["id"]
    r = client.post(f"/api/v1/projects/{project}/share-links/", {"label": "x"}, format="json")
    assert r.status_code == 201, r.content
    link = ShareLink.objects.get(pk=r.json()["id"])
    return Filled(run, image_id, artifact_id, job_id, link.pk, r.json()["token"])


@pytest.fixture
def acme(api: Any, tenants: Any) -> Filled:
    return fill(api(tenants.alice), "acme/vision", "alice-run")


@pytest.fixture
def umbrella(api: Any, tenants: Any) -> Filled:
    return fill(api(tenants.mallory), "umbrella/secret", "mallory-run")

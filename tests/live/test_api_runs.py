"""The run endpoints the client uses (POST runs, PATCH run, POST params), as the contract says."""

from __future__ import annotations

import pytest

from tracker.models import Run

pytestmark = pytest.mark.django_db


def test_create_run_is_idempotent_per_key(api, tenants):
    c = api(tenants.bob)
    body = {"name": "r1", "tags": ["a"], "params": {"opt": {"lr": 0.1}}, "source": "client"}
    first = c.post(
        "/api/v1/projects/acme/vision/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="create-1"
    )
    again = c.post(
        "/api/v1/projects/acme/vision/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="create-1"
    )
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert Run.objects.filter(name="r1").count() == 1
    out = first.json()
    assert out["params"] == {"opt/lr": 0.1} and out["tags"] == ["a"]
    assert out["project"] == "acme/vision" and out["created_by"] == "bob"
    assert out["status"] == "running" and out["source"] == "client"
    other = c.post(
        "/api/v1/projects/acme/vision/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="create-2"
    )
    assert other.json()["id"] != out["id"]


def test_patch_and_params(api, tenants, run):
    c = api(tenants.bob)
    r = c.patch(f"/api/v1/runs/{run.pk}/", {"status": "finished", "tags": ["x"]}, format="json")
    assert r.status_code == 200
    assert r.json()["status"] == "finished" and r.json()["ended_at"] and r.json()["tags"] == ["x"]
    r = c.post(
        f"/api/v1/runs/{run.pk}/params/",
        {"params": {"a/b": 1, "c": "x", "d": None, "e": True}},
        format="json",
    )
    assert r.status_code == 200
    assert r.json() == {"params": {"a/b": 1, "c": "x", "d": None, "e": True}}
    r = c.post(f"/api/v1/runs/{run.pk}/params/", {"params": {"c": "y"}}, format="json")
    assert r.json()["params"]["c"] == "y" and r.json()["params"]["a/b"] == 1
    assert (
        api(tenants.carol)
        .patch(f"/api/v1/runs/{run.pk}/", {"name": "z"}, format="json")
        .status_code
        == 403
    )
    assert (
        api(tenants.mallory)
        .patch(f"/api/v1/runs/{run.pk}/", {"name": "z"}, format="json")
        .status_code
        == 404
    )

"""Workspaces, members, projects, runs, params, tokens and share links through the API."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import RunFactory, UserFactory
from tracker.models import ApiToken, Membership, Param, Run, ShareLink, digest


def err(response):
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


# --- workspaces and members -----------------------------------------------------------------
def test_create_workspace_makes_creator_owner(tenants, api):
    r = api(tenants.bob).post(
        "/api/v1/workspaces/", {"slug": "bobs-lab", "name": "Bob"}, format="json"
    )
    assert r.status_code == 201, r.content
    assert r.json()["role"] == "owner"
    assert Membership.objects.get(workspace__slug="bobs-lab").user == tenants.bob


def test_workspace_slug_validation_and_conflict(tenants, api):
    c = api(tenants.alice)
    r = c.post("/api/v1/workspaces/", {"slug": "Not A Slug"}, format="json")
    assert r.status_code == 400 and err(r)["field"] == "slug"
    r = c.post("/api/v1/workspaces/", {"slug": "acme"}, format="json")
    assert r.status_code == 409 and err(r)["field"] == "slug"


def test_invite_change_role_and_last_owner_rules(tenants, api):
    c = api(tenants.alice)
    dave = UserFactory(username="dave", email="Dave@Example.com")
    r = c.post(
        "/api/v1/workspaces/acme/members/",
        {"user": "dave@example.com", "role": "viewer"},
        format="json",
    )
    assert r.status_code == 201 and r.json()["username"] == "dave"
    r = c.post(
        "/api/v1/workspaces/acme/members/", {"user": "dave", "role": "viewer"}, format="json"
    )
    assert r.status_code == 409
    r = c.post(
        "/api/v1/workspaces/acme/members/", {"user": "nobody", "role": "viewer"}, format="json"
    )
    assert r.status_code == 400 and err(r)["code"] == "unknown_user"
    r = c.patch(
        f"/api/v1/workspaces/acme/members/{dave.pk}/", {"role": "contributor"}, format="json"
    )
    assert r.status_code == 200 and r.json()["role"] == "contributor"
    # alice is the only owner: she can neither demote nor remove herself
    r = c.patch(
        f"/api/v1/workspaces/acme/members/{tenants.alice.pk}/", {"role": "viewer"}, format="json"
    )
    assert r.status_code == 409 and err(r)["code"] == "last_owner"
    r = c.delete(f"/api/v1/workspaces/acme/members/{tenants.alice.pk}/")
    assert r.status_code == 409 and err(r)["code"] == "last_owner"
    # with a second owner, she can
    c.patch(f"/api/v1/workspaces/acme/members/{tenants.bob.pk}/", {"role": "owner"}, format="json")
    r = c.patch(
        f"/api/v1/workspaces/acme/members/{tenants.alice.pk}/", {"role": "viewer"}, format="json"
    )
    assert r.status_code == 200


def test_removed_member_token_stops_working(tenants, api):
    carol = api(tenants.carol)
    assert carol.get("/api/v1/projects/acme/vision/").status_code == 200
    r = api(tenants.alice).delete(f"/api/v1/workspaces/acme/members/{tenants.carol.pk}/")
    assert r.status_code == 204
    r = carol.get("/api/v1/projects/acme/vision/")
    assert r.status_code == 404 and err(r)["code"] == "not_found"


def test_member_emails_only_for_owners(tenants, api):
    rows = api(tenants.carol).get("/api/v1/workspaces/acme/members/").json()["results"]
    assert all(m["email"] == "" for m in rows)
    rows = api(tenants.alice).get("/api/v1/workspaces/acme/members/").json()["results"]
    assert {m["email"] for m in rows} >= {"bob@example.com"}


# --- projects --------------------------------------------------------------------------------
def test_public_project_readable_by_anyone_writable_by_members_only(tenants, api):
    mallory = api(tenants.mallory)
    assert mallory.get("/api/v1/projects/acme/vision/").status_code == 404
    api(tenants.alice).patch(
        "/api/v1/projects/acme/vision/", {"visibility": "public"}, format="json"
    )
    RunFactory(project=tenants.vision)
    for client in (mallory, api()):
        assert client.get("/api/v1/projects/acme/vision/").status_code == 200
        assert client.get("/api/v1/projects/acme/vision/runs/").json()["results"]
    r = mallory.post("/api/v1/projects/acme/vision/runs/", {"name": "x"}, format="json")
    assert r.status_code == 403
    # the workspace itself stays private to its members
    assert mallory.get("/api/v1/workspaces/acme/").status_code == 404


def test_project_member_grant_raises_role_on_one_project(tenants, api):
    dave = UserFactory(username="dave")
    c = api(dave)
    assert c.get("/api/v1/projects/acme/vision/").status_code == 404
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/members/",
        {"user": "dave", "role": "contributor"},
        format="json",
    )
    assert r.status_code == 201
    assert (
        c.post(
            "/api/v1/projects/acme/vision/runs/", {"name": "guest-run"}, format="json"
        ).status_code
        == 201
    )
    # carol (workspace viewer) raised to contributor on vision only
    api(tenants.alice).post(
        "/api/v1/projects/acme/vision/members/",
        {"user": "carol", "role": "contributor"},
        format="json",
    )
    assert (
        api(tenants.carol).post("/api/v1/projects/acme/vision/runs/", {}, format="json").status_code
        == 201
    )


# --- runs and params -------------------------------------------------------------------------
def test_run_lifecycle_and_params(tenants, api):
    c = api(tenants.bob)
    r = c.post(
        "/api/v1/projects/acme/vision/runs/",
        {
            "name": "resnet",
            "tags": ["baseline", "baseline"],
            "params": {
                "lr": 3e-4,
                "opt": {"name": "adam", "betas": [0.9, 0.99]},
                "seed": None,
                "aug": True,
            },
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    run = r.json()
    assert run["tags"] == ["baseline"] and run["created_by"] == "bob" and run["status"] == "running"
    assert run["params"] == {
        "aug": True,
        "lr": 3e-4,
        "opt/betas": [0.9, 0.99],
        "opt/name": "adam",
        "seed": None,
    }
    assert run["url"].endswith(f"/acme/vision/runs/{run['id']}")
    p = Param.objects.get(run_id=run["id"], key="lr")
    assert (p.type, p.value_num) == ("number", 3e-4)
    r = c.post(
        f"/api/v1/runs/{run['id']}/params/", {"params": {"lr": 1e-3, "epochs": 10}}, format="json"
    )
    assert r.json()["params"]["lr"] == 1e-3 and r.json()["params"]["epochs"] == 10
    r = c.patch(
        f"/api/v1/runs/{run['id']}/", {"status": "finished", "notes": "good"}, format="json"
    )
    assert r.json()["status"] == "finished" and r.json()["ended_at"]
    r = c.patch(f"/api/v1/runs/{run['id']}/", {"status": "exploded"}, format="json")
    assert r.status_code == 400 and err(r)["field"] == "status"
    bad = c.post(f"/api/v1/runs/{run['id']}/params/", {"params": {"../etc": 1}}, format="json")
    assert bad.status_code == 400 and err(bad)["code"] == "invalid_key"


def test_run_list_paginates_with_fixed_queries(tenants, api, django_assert_max_num_queries):
    c = api(tenants.carol)
    for n in (3, 30):
        RunFactory.create_batch(n, project=tenants.vision, created_by=tenants.bob)
        with django_assert_max_num_queries(8):
            r = c.get("/api/v1/projects/acme/vision/runs/?limit=100")
        assert r.status_code == 200
    seen = []
    url = "/api/v1/projects/acme/vision/runs/?limit=7"
    while url:
        body = c.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == 33


def test_mass_assignment_has_no_effect(tenants, api):
    c = api(tenants.bob)
    r = c.post(
        "/api/v1/projects/acme/vision/runs/",
        {
            "name": "r",
            "project": tenants.secret.pk,
            "created_by": tenants.mallory.pk,
            "id": 999999,
            "source": "upload",
            "status": "finished",
        },
        format="json",
    )
    assert r.status_code == 201
    run = Run.objects.get(pk=r.json()["id"])
    assert (run.project_id, run.created_by_id, run.source, run.status) == (
        tenants.vision.pk,
        tenants.bob.pk,
        "client",
        "running",
    )
    assert run.pk != 999999
    r = c.patch(
        f"/api/v1/runs/{run.pk}/",
        {"project": tenants.secret.pk, "created_by": tenants.mallory.pk},
        format="json",
    )
    run.refresh_from_db()
    assert (run.project_id, run.created_by_id) == (tenants.vision.pk, tenants.bob.pk)
    a = api(tenants.alice)
    a.patch(
        f"/api/v1/workspaces/acme/members/{tenants.carol.pk}/",
        {"role": "viewer", "user": tenants.mallory.pk, "workspace": tenants.umbrella.pk},
        format="json",
    )
    m = Membership.objects.get(user=tenants.carol)
    assert (m.workspace_id, m.role) == (tenants.acme.pk, "viewer")
    r = a.post(
        "/api/v1/workspaces/", {"slug": "w2", "created_by": tenants.mallory.pk}, format="json"
    )
    assert Membership.objects.get(workspace__slug="w2").user == tenants.alice


# --- tokens ----------------------------------------------------------------------------------
def test_token_secret_shown_once_and_stored_hashed(tenants, client, caplog):
    caplog.set_level(logging.DEBUG)
    client.force_login(tenants.alice)
    r = client.post("/api/v1/tokens/", {"name": "laptop"}, content_type="application/json")
    assert r.status_code == 201, r.content
    secret = r.json()["token"]
    assert secret.startswith("trk_")
    row = ApiToken.objects.get(pk=r.json()["id"])
    assert row.token_hash == digest(secret)
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM tracker_apitoken WHERE id = %s", [row.pk])
        assert secret not in repr(cur.fetchone())
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert "token" not in listed[0] and listed[0]["prefix"] == row.prefix
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert c.get("/api/v1/me/").json()["username"] == "alice"
    row.refresh_from_db()
    assert row.last_used_at is not None
    assert all(secret not in rec.getMessage() for rec in caplog.records)
    # revoke: the same secret stops working at once
    assert client.delete(f"/api/v1/tokens/{row.pk}/").status_code == 204
    r = c.get("/api/v1/me/")
    assert r.status_code == 401 and err(r)["code"] == "authentication_failed"


def test_token_narrowed_to_workspace_and_role(tenants, client, api):
    client.force_login(tenants.bob)
    secret = client.post(
        "/api/v1/tokens/",
        {"name": "ro", "workspace": "acme", "role": "viewer"},
        content_type="application/json",
    ).json()["token"]
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert c.get("/api/v1/projects/acme/vision/runs/").status_code == 200
    assert c.post("/api/v1/projects/acme/vision/runs/", {}, format="json").status_code == 403
    # a workspace of another tenant inside the body looks missing
    r = client.post(
        "/api/v1/tokens/", {"name": "x", "workspace": "umbrella"}, content_type="application/json"
    )
    assert r.status_code == 404


def test_service_account_token(tenants, client):
    client.force_login(tenants.alice)
    r = client.post(
        "/api/v1/tokens/",
        {"name": "ci-bot", "workspace": "acme", "role": "contributor", "service_account": True},
        content_type="application/json",
    )
    assert r.status_code == 201 and r.json()["service_account"]
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {r.json()['token']}")
    r = c.post("/api/v1/projects/acme/vision/runs/", {"name": "nightly"}, format="json")
    assert r.status_code == 201 and r.json()["created_by"] is None
    assert c.get("/api/v1/projects/umbrella/secret/").status_code == 404
    assert c.get("/api/v1/me/").json()["service_account"] is True
    # bob (not an owner) cannot mint a service account for acme
    client.force_login(tenants.bob)
    r = client.post(
        "/api/v1/tokens/",
        {"name": "x", "workspace": "acme", "role": "owner", "service_account": True},
        content_type="application/json",
    )
    assert r.status_code == 403


def test_tokens_cannot_mint_tokens(tenants, api):
    r = api(tenants.alice).post("/api/v1/tokens/", {"name": "child"}, format="json")
    assert r.status_code == 403


# --- share links -----------------------------------------------------------------------------
def test_share_link_grants_viewer_on_its_project_only(tenants, api):
    run = RunFactory(project=tenants.vision)
    other = RunFactory(project=tenants.secret)
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/", {"label": "review"}, format="json"
    )
    assert r.status_code == 201
    secret, link_id = r.json()["token"], r.json()["id"]
    assert r.json()["url"].endswith(f"/s/{secret}/")
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM tracker_sharelink WHERE id = %s", [link_id])
        assert secret not in repr(cur.fetchone())
    anon = api()
    q = f"?share={secret}"
    assert anon.get(f"/api/v1/projects/acme/vision/{q}").status_code == 200
    assert anon.get(f"/api/v1/runs/{run.pk}/{q}").status_code == 200
    assert anon.get(f"/api/v1/runs/{other.pk}/{q}").status_code == 404
    assert (
        anon.patch(f"/api/v1/runs/{run.pk}/{q}", {"notes": "x"}, format="json").status_code == 403
    )
    assert anon.get(f"/api/v1/projects/acme/vision/share-links/{q}").status_code == 403
    link = ShareLink.objects.get(pk=link_id)
    assert link.use_count == 5 and link.last_used_at is not None
    assert api(tenants.alice).delete(f"/api/v1/share-links/{link_id}/").status_code == 204
    assert anon.get(f"/api/v1/projects/acme/vision/{q}").status_code == 401


def test_run_scoped_and_expired_share_links(tenants, api):
    a, b = RunFactory(project=tenants.vision), RunFactory(project=tenants.vision)
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/", {"run": a.pk}, format="json"
    )
    q = f"?share={r.json()['token']}"
    anon = api()
    assert anon.get(f"/api/v1/runs/{a.pk}/{q}").status_code == 200
    assert anon.get(f"/api/v1/runs/{b.pk}/{q}").status_code == 404
    ids = [
        row["id"] for row in anon.get(f"/api/v1/projects/acme/vision/runs/{q}").json()["results"]
    ]
    assert ids == [a.pk]
    # another tenant's run id inside the body is refused like a missing one
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/",
        {"run": RunFactory(project=tenants.secret).pk},
        format="json",
    )
    assert r.status_code == 404
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/",
        {"expires_at": (timezone.now() - timedelta(days=1)).isoformat()},
        format="json",
    )
    assert r.status_code == 400 and err(r)["field"] == "expires_at"
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/",
        {"expires_at": (timezone.now() + timedelta(days=1)).isoformat()},
        format="json",
    )
    secret = r.json()["token"]
    ShareLink.objects.filter(pk=r.json()["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert anon.get(f"/api/v1/projects/acme/vision/?share={secret}").status_code == 401


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{not json", "JSON parse error"),
        (b"[" * 5000 + b"]" * 5000, "nesting"),
        (b'{"name": NaN}', "NaN"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_bad_json_is_a_400_with_a_message(tenants, api, body, needle):
    r = api(tenants.bob).generic(
        "POST", "/api/v1/projects/acme/vision/runs/", body, content_type="application/json"
    )
    assert r.status_code == 400, r.content
    assert needle in err(r)["message"]


def test_oversized_json_body(tenants, api, settings):
    settings.TRACKER_MAX_JSON_BODY = 1000
    r = api(tenants.bob).post(
        "/api/v1/projects/acme/vision/runs/", {"notes": "x" * 2000}, format="json"
    )
    assert r.status_code == 413 and err(r)["code"] == "too_large"


def test_unknown_api_path_is_json_404(client):
    r = client.get("/api/v1/nope/")
    assert r.status_code == 404 and r.json() == {
        "error": {"code": "not_found", "message": "Not found."}
    }


def test_throttling_per_token(tenants, api, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "principal": "3/min",
        },
    }
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    # The class attribute outlives this test; restore the original, not the still-overridden
    # api_settings (the settings fixture is undone only after `finally` runs).
    original_rates = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        c = api(tenants.carol)
        codes = [c.get("/api/v1/me/").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = c.get("/api/v1/me/")
        assert err(r)["code"] == "throttled" and "Retry-After" in r.headers
        # another token of the same user has its own budget
        assert api(tenants.carol).get("/api/v1/me/").status_code == 200
    finally:
        cache.clear()
        SimpleRateThrottle.THROTTLE_RATES = original_rates


def test_openapi_schema_lists_routes(client):
    r = client.get("/api/v1/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/projects/{ws}/{project}/runs/" in paths and "/api/v1/tokens/" in paths

"""Cross-tenant ids in paths, query strings and bodies; tokens after membership removal; share
links after revocation and expiry. Every such request is a 404 (or 401 for dead credentials)
and leaves the other tenant's data exactly as it was.

The walker discovers every API route from the URL conf, so a new route is covered the day it
is added: alice (owner of acme) calls it with the ids of mallory's workspace umbrella.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from tracker.models import (
    ApiToken,
    Artifact,
    IngestJob,
    Membership,
    Param,
    Project,
    Run,
    Series,
    ShareLink,
    Workspace,
)

pytestmark = pytest.mark.django_db


def _walk(patterns: list[Any], prefix: str = "", ns: str = "") -> list[tuple[str, Any, str]]:
    out = []
    for p in patterns:
        if isinstance(p, URLResolver):
            sub = f"{ns}{p.namespace}:" if p.namespace else ns
            out.extend(_walk(p.url_patterns, prefix + str(p.pattern), sub))
        elif isinstance(p, URLPattern):
            out.append((f"{ns}{p.name}", p, prefix + str(p.pattern)))
    return out


def api_routes() -> list[tuple[str, str, str]]:
    routes = set()
    for name, pattern, route in _walk(get_resolver().url_patterns):
        if not route.startswith("api/v1/") or "<" not in route:
            continue
        view = getattr(pattern.callback, "view_class", None)
        for m in ("get", "post", "put", "patch", "delete"):
            if view is not None and hasattr(view, m):
                routes.add((name, m, route))
    return sorted(routes)


ROUTES = api_routes()

# Valid bodies, so that a missing access check would really write something.
BODIES: dict[str, Any] = {
    "api:workspace-detail": {"name": "pwned"},
    "api:member-list": {"user": "alice", "role": "owner"},
    "api:member-detail": {"role": "owner"},
    "api:project-list": {"slug": "pwned"},
    "api:project-detail": {"name": "pwned", "visibility": "public"},
    "api:project-member-list": {"user": "alice", "role": "owner"},
    "api:run-list": {"name": "pwned"},
    "api:share-link-list": {"label": "pwned"},
    "api:run-detail": {"name": "pwned", "notes": "pwned"},
    "api:run-params": {"params": {"pwned": 1}},
    "api:run-metrics": {"series": [{"key": "pwned", "steps": [0], "values": [1.0]}]},
    "api:run-text": {"items": [{"key": "pwned", "step": 0, "value": "x"}]},
    "api:run-histograms": {
        "items": [{"key": "pwned", "step": 0, "bucket_limits": [1.0], "bucket_counts": [1.0]}]
    },
    "api:run-pr-curves": {"items": []},
    "api:run-artifacts": {
        "path": "pwned.bin",
        "size": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
    },
    "api:artifact-complete": {},
    "api:artifact-parts": {"parts": [{"number": 1}]},
    "api:upload-create": {"files": [{"path": "p/events.out.tfevents.1.h", "size": 3}]},
}


def snapshot(ws: Workspace) -> dict[str, Any]:
    """Everything of a tenant a request could change."""
    runs = Run.objects.filter(project__workspace=ws)
    return {
        "workspace": list(Workspace.objects.filter(pk=ws.pk).values()),
        "members": sorted(Membership.objects.filter(workspace=ws).values_list("user_id", "role")),
        "projects": list(Project.objects.filter(workspace=ws).order_by("pk").values()),
        "runs": list(runs.order_by("pk").values()),
        "params": sorted(Param.objects.filter(run__in=runs).values_list("run_id", "key")),
        "series": sorted(Series.objects.filter(run__in=runs).values_list("run_id", "key", "count")),
        "artifacts": list(Artifact.objects.filter(run__in=runs).order_by("pk").values()),
        "jobs": list(
            IngestJob.objects.filter(project__workspace=ws)
            .order_by("pk")
            .values("pk", "state", "progress", "error")
        ),
        "links": list(ShareLink.objects.filter(project__workspace=ws).order_by("pk").values()),
    }


def fill_path(route: str, values: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        return str(values[m.group(1)])

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", sub, route)


def test_walker_covers_the_api() -> None:
    assert len(ROUTES) >= 55, len(ROUTES)


def test_other_tenants_ids_in_paths_are_404_with_no_side_effect(
    api: Any, tenants: Any, acme: Any, umbrella: Any
) -> None:
    t = tenants
    mallory_token = ApiToken.objects.filter(user=t.mallory).first()
    values = {
        "ws": "umbrella",
        "project": "secret",
        "run_id": umbrella.run.pk,
        "image_id": umbrella.image_id,
        "artifact_id": umbrella.artifact_id,
        "job_id": umbrella.job_id,
        "link_id": umbrella.link_id,
        "token_id": mallory_token.pk,
        "user_id": t.mallory.pk,
    }
    before = snapshot(t.umbrella)
    alice = api(t.alice)
    checked = []
    for name, method, route in ROUTES:
        url = fill_path(route, values)
        if name == "api:upload-content":
            url += "?path=r1/events.out.tfevents.1.host&offset=0"
            r = alice.generic("PUT", url, b"0123456789", content_type="application/octet-stream")
        elif name == "api:artifact-content":
            r = alice.generic(
                "PUT", url + "?offset=0", b"abc", content_type="application/octet-stream"
            )
        else:
            r = getattr(alice, method)(url, BODIES.get(name, {}), format="json")
        assert r.status_code == 404, (name, method, url, r.status_code, r.content[:200])
        checked.append((name, method))
    assert snapshot(t.umbrella) == before
    assert len(checked) == len(ROUTES)


def test_other_tenants_ids_in_query_strings(
    api: Any, tenants: Any, acme: Any, umbrella: Any
) -> None:
    alice = api(tenants.alice)
    mine, theirs = acme.run.pk, umbrella.run.pk
    for runs in (f"{theirs}", f"{mine},{theirs}", f"{theirs},{mine}", f"{mine}&runs={theirs}"):
        r = alice.get(f"/api/v1/projects/acme/vision/series?runs={runs}&keys=loss")
        assert r.status_code == 404, (runs, r.content[:200])
        # Through the other project's URL (invisible) as well.
        r = alice.get(f"/api/v1/projects/umbrella/secret/series?runs={runs}&keys=loss")
        assert r.status_code == 404
    web = Client()
    web.force_login(tenants.alice)
    for url in (
        f"/acme/vision/compare?runs={mine},{theirs}",
        f"/acme/vision/data/series?runs={mine},{theirs}&keys=loss",
        f"/acme/vision/data/series?runs={theirs}&keys=loss",
        f"/acme/vision/data/histograms?run={theirs}&key=loss",
        f"/acme/vision/runs/{theirs}/",
        f"/acme/vision/images/{umbrella.image_id}",
        f"/acme/vision/artifacts/{umbrella.artifact_id}/download",
    ):
        assert web.get(url).status_code == 404, url
    # A share link of acme cannot reach umbrella's objects either.
    share = acme.link_secret
    anon = Client()
    for url in (
        f"/s/{share}/runs/{theirs}/",
        f"/s/{share}/compare?runs={theirs}",
        f"/s/{share}/data/series?runs={theirs}&keys=loss",
        f"/s/{share}/images/{umbrella.image_id}",
        f"/s/{share}/artifacts/{umbrella.artifact_id}/download",
    ):
        assert anon.get(url).status_code == 404, url
    r = anon.get(f"/api/v1/runs/{theirs}/?share={share}")
    assert r.status_code == 404
    r = anon.get(f"/api/v1/projects/acme/vision/series?runs={theirs}&keys=loss&share={share}")
    assert r.status_code == 404


def test_other_tenants_ids_in_bodies(api: Any, tenants: Any, acme: Any, umbrella: Any) -> None:
    t = tenants
    before = snapshot(t.umbrella)
    alice = api(t.alice)
    links = ShareLink.objects.count()
    # A share link of acme/vision for mallory's run.
    r = alice.post(
        "/api/v1/projects/acme/vision/share-links/", {"run": umbrella.run.pk}, format="json"
    )
    assert r.status_code == 404
    assert ShareLink.objects.count() == links
    # A token scoped to mallory's workspace (web session: tokens cannot mint tokens).
    web = Client()
    web.force_login(t.alice)
    r = web.post(
        "/api/v1/tokens/",
        {"name": "x", "workspace": "umbrella"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN="x",
    )
    assert r.status_code in (403, 404), r.status_code  # CSRF or not visible, never a token
    assert not ApiToken.objects.filter(user=t.alice, workspace=t.umbrella).exists()
    # Adding mallory's user to acme is fine; adding alice to umbrella is not possible.
    r = alice.post(
        "/api/v1/workspaces/umbrella/members/", {"user": "alice", "role": "owner"}, format="json"
    )
    assert r.status_code == 404
    assert snapshot(t.umbrella) == before


def test_token_after_membership_removal(api: Any, tenants: Any, acme: Any, token_for: Any) -> None:
    from rest_framework.test import APIClient

    secret = token_for(tenants.bob)
    bob = APIClient()
    bob.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert bob.get(f"/api/v1/runs/{acme.run.pk}/").status_code == 200
    r = api(tenants.alice).delete(f"/api/v1/workspaces/acme/members/{tenants.bob.pk}/")
    assert r.status_code == 204
    runs = Run.objects.count()
    # The token still authenticates bob, but acme is gone for him: 404 everywhere, no writes.
    assert bob.get("/api/v1/me/").status_code == 200
    assert bob.get(f"/api/v1/runs/{acme.run.pk}/").status_code == 404
    assert bob.get("/api/v1/projects/acme/vision/").status_code == 404
    r = bob.post("/api/v1/projects/acme/vision/runs/", {"name": "late"}, format="json")
    assert r.status_code == 404
    body = {"series": [{"key": "late", "steps": [0], "values": [1.0]}]}
    assert bob.post(f"/api/v1/runs/{acme.run.pk}/metrics/", body, format="json").status_code == 404
    assert Run.objects.count() == runs
    assert not Series.objects.filter(key="late").exists()


def test_share_link_after_revocation_and_expiry(api: Any, tenants: Any, acme: Any) -> None:
    secret = acme.link_secret
    anon = Client()
    assert anon.get(f"/s/{secret}/").status_code == 200
    assert anon.get(f"/api/v1/runs/{acme.run.pk}/?share={secret}").status_code == 200
    r = api(tenants.alice).delete(f"/api/v1/share-links/{acme.link_id}/")
    assert r.status_code == 204
    assert anon.get(f"/s/{secret}/").status_code == 404
    assert anon.get(f"/s/{secret}/runs/{acme.run.pk}/").status_code == 404
    assert anon.get(f"/api/v1/runs/{acme.run.pk}/?share={secret}").status_code == 401
    # Expiry: a second link whose time ran out.
    r = api(tenants.alice).post(
        "/api/v1/projects/acme/vision/share-links/",
        {"expires_at": (timezone.now() + timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert r.status_code == 201
    secret2 = r.json()["token"]
    assert anon.get(f"/s/{secret2}/").status_code == 200
    ShareLink.objects.filter(pk=r.json()["id"]).update(expires_at=timezone.now() - timedelta(1))
    assert anon.get(f"/s/{secret2}/").status_code == 404
    assert anon.get(f"/api/v1/projects/acme/vision/?share={secret2}").status_code == 401
    # A share link never writes.
    r = Client().post(
        f"/api/v1/projects/acme/vision/runs/?share={secret2}",
        {"name": "x"},
        content_type="application/json",
    )
    assert r.status_code in (401, 403, 404)

"""Every API route × every kind of caller, with the exact status each must get.

Routes are discovered from the URL conf, so a new route fails this test until it is given a
rule in RULES (and, if its URL has a new kind of parameter, a value in `_path_values`). Each
case runs on fresh data, so destructive methods do not disturb other cases.

Rules name the role a route needs:
  public            anyone (valid credentials or none)
  login             any authenticated principal (user or service account)
  user              a real user; share links and anonymous callers are 401
  session-user      a user on a web session: bearer tokens are 403 (tokens cannot mint tokens)
  own-token         the user who created the token; anyone else 404
  ws-viewer / ws-contributor / ws-owner    role in workspace acme
  viewer / contributor / owner             role on project acme/vision
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from PIL import Image as PILImage
from rest_framework.test import APIClient

from tests.factories import ProjectFactory, RunFactory, UserFactory
from tracker.models import ApiToken, ProjectMembership, Role
from tracker.services import artifacts as artifact_services
from tracker.services import media as media_services
from tracker.services import uploads
from tracker.services.sharing import create_share_link, create_token


def _png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _tar_gz() -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("run1/events.out.tfevents.1")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def _image_form() -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    meta = [{"key": "samples", "step": 1, "field": "f0"}]
    return {
        "meta": json.dumps(meta),
        "f0": SimpleUploadedFile("a.png", _png(), content_type="image/png"),
    }


def _archive_form() -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return {"file": SimpleUploadedFile("logs.tar.gz", _tar_gz(), "application/gzip")}


ARTIFACT_BYTES = b"checkpoint"


@dataclass(frozen=True)
class Rule:
    need: str
    body: dict[str, Any] | Callable[[], dict[str, Any]] | bytes | None = None
    ok: int = 200
    query: str = ""


RULES: dict[tuple[str, str], Rule] = {
    ("api:schema", "get"): Rule("public"),
    ("api:me", "get"): Rule("login"),
    ("api:workspace-list", "get"): Rule("login"),
    ("api:workspace-list", "post"): Rule("user", {"slug": "fresh"}, 201),
    ("api:workspace-detail", "get"): Rule("ws-viewer"),
    ("api:workspace-detail", "patch"): Rule("ws-owner", {"name": "Acme Inc"}),
    ("api:workspace-detail", "delete"): Rule("ws-owner", None, 204),
    ("api:member-list", "get"): Rule("ws-viewer"),
    ("api:member-list", "post"): Rule("ws-owner", {"user": "dave", "role": "viewer"}, 201),
    ("api:member-detail", "get"): Rule("ws-viewer"),
    ("api:member-detail", "patch"): Rule("ws-owner", {"role": "contributor"}),
    ("api:member-detail", "delete"): Rule("ws-owner", None, 204),
    ("api:project-list", "get"): Rule("ws-viewer"),
    ("api:project-list", "post"): Rule("ws-contributor", {"slug": "fresh"}, 201),
    ("api:project-detail", "get"): Rule("viewer"),
    ("api:project-detail", "patch"): Rule("owner", {"name": "Vision"}),
    ("api:project-detail", "delete"): Rule("owner", None, 204),
    ("api:project-member-list", "get"): Rule("contributor"),
    ("api:project-member-list", "post"): Rule(
        "owner", {"user": "erin", "role": "contributor"}, 201
    ),
    ("api:project-member-detail", "delete"): Rule("owner", None, 204),
    ("api:run-list", "get"): Rule("viewer"),
    ("api:run-list", "post"): Rule("contributor", {"name": "new-run"}, 201),
    ("api:share-link-list", "get"): Rule("owner"),
    ("api:share-link-list", "post"): Rule("owner", {"label": "for review"}, 201),
    ("api:share-link-detail", "get"): Rule("owner"),
    ("api:share-link-detail", "delete"): Rule("owner", None, 204),
    ("api:run-detail", "get"): Rule("viewer"),
    ("api:run-detail", "patch"): Rule("contributor", {"notes": "lr too high"}),
    ("api:run-detail", "delete"): Rule("contributor", None, 204),
    ("api:run-params", "get"): Rule("viewer"),
    ("api:run-params", "post"): Rule("contributor", {"params": {"lr": 0.1}}),
    ("api:token-list", "get"): Rule("user"),
    ("api:token-list", "post"): Rule("session-user", {"name": "ci"}, 201),
    ("api:token-detail", "delete"): Rule("own-token", None, 204),
    # reads (issue 6)
    ("api:runs-table", "get"): Rule("viewer", query="sort=-created_at&columns=params.lr"),
    ("api:project-columns", "get"): Rule("viewer"),
    ("api:project-series", "get"): Rule("viewer", query="runs={run_id}&keys=loss"),
    ("api:project-hparams", "get"): Rule("viewer"),
    ("api:project-export", "get"): Rule("viewer", query="format=json"),
    ("api:project-export-zip", "get"): Rule("viewer"),
    ("api:run-series", "get"): Rule("viewer", query="keys=loss"),
    ("api:series-export", "get"): Rule("viewer", query="format=csv"),
    ("api:run-keys", "get"): Rule("viewer"),
    ("api:run-export", "get"): Rule("viewer"),
    ("api:run-histograms-read", "get"): Rule("viewer"),
    ("api:run-text-read", "get"): Rule("viewer"),
    ("api:run-pr-curves-read", "get"): Rule("viewer"),
    # logdir uploads (issue 4)
    ("api:upload-create", "post"): Rule(
        "contributor", {"files": [{"path": "r/events.out.tfevents.1", "size": 1}]}, 201
    ),
    ("api:upload-content", "put"): Rule(
        "contributor", b"x", query="path=r/events.out.tfevents.1&offset=0"
    ),
    ("api:upload-finish", "post"): Rule("contributor", None, 202),
    ("api:upload-archive", "post"): Rule("contributor", _archive_form, 202),
    ("api:job-detail", "get"): Rule("viewer"),
    ("api:project-job-list", "get"): Rule("viewer"),
    # live logging (issue 5)
    ("api:run-metrics", "post"): Rule(
        "contributor", {"series": [{"key": "loss", "steps": [1], "values": [0.5]}]}
    ),
    ("api:run-text", "post"): Rule(
        "contributor", {"items": [{"key": "n", "step": 1, "value": "hi"}]}
    ),
    ("api:run-histograms", "post"): Rule(
        "contributor",
        {"items": [{"key": "w", "step": 1, "bucket_limits": [0, 1], "bucket_counts": [2, 3]}]},
    ),
    ("api:run-pr-curves", "post"): Rule(
        "contributor",
        {
            "items": [
                {
                    "key": "pr",
                    "step": 1,
                    "precision": [1.0],
                    "recall": [0.5],
                    "thresholds": [0.5],
                    "tp": [1],
                    "fp": [0],
                    "tn": [1],
                    "fn": [1],
                }
            ]
        },
    ),
    ("api:run-images", "get"): Rule("viewer"),
    ("api:run-images", "post"): Rule("contributor", _image_form, 201),
    ("api:image-content", "get"): Rule("viewer"),
    ("api:run-artifacts", "get"): Rule("viewer"),
    ("api:run-artifacts", "post"): Rule(
        "contributor",
        {"path": "model.pt", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
        201,
    ),
    ("api:artifact-detail", "get"): Rule("viewer"),
    ("api:artifact-content", "put"): Rule("contributor", ARTIFACT_BYTES, query="offset=0"),
    ("api:artifact-complete", "post"): Rule("contributor", {}),
    # Local storage has no parts to sign (400 wrong_mode once access is granted); the S3
    # behaviour is in tests/live/test_api_artifacts.py.
    ("api:artifact-parts", "post"): Rule("contributor", {"parts": [{"number": 1}]}, 400),
    ("api:artifact-download", "get"): Rule("viewer"),
}

# Principals and the role each holds in workspace acme / project acme/vision.
PRINCIPALS = [
    "anonymous",
    "alice",  # owner
    "bob",  # contributor
    "carol",  # viewer
    "mallory",  # owner of another workspace
    "revoked_token",
    "expired_token",
    "share_other_project",
    "share_revoked",
]
ROLE_OF = {"alice": "owner", "bob": "contributor", "carol": "viewer"}
RANK = {"viewer": 1, "contributor": 2, "owner": 3}


def expected_status(rule: Rule, who: str) -> int:
    if rule.need == "public":
        return rule.ok  # public routes do not even read credentials
    if who in {"revoked_token", "expired_token", "share_revoked"}:
        return 401  # credentials that stopped working fail authentication everywhere
    is_user = who in {"alice", "bob", "carol", "mallory"}
    if rule.need in {"login", "user"}:
        return rule.ok if is_user else 401
    if rule.need == "session-user":
        return 403 if is_user else 401
    if rule.need == "own-token":
        if not is_user:
            return 401
        return rule.ok if who == "alice" else 404
    # Workspace- and project-scoped rules: outsiders see nothing.
    need = rule.need.removeprefix("ws-")
    role = ROLE_OF.get(who)
    if role is None:
        return 404
    return rule.ok if RANK[role] >= RANK[need] else 403


def _walk(
    patterns: list[Any], prefix: str = "", namespace: str = ""
) -> list[tuple[str, URLPattern]]:
    out = []
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            out.extend(_walk(p.url_patterns, prefix + str(p.pattern), ns))
        elif isinstance(p, URLPattern):
            out.append((f"{namespace}{p.name}", p, prefix + str(p.pattern)))
    return out


def api_routes() -> list[tuple[str, str]]:
    routes = []
    for name, pattern, route in _walk(get_resolver().url_patterns):
        if not route.startswith("api/v1/"):
            continue
        view = getattr(pattern.callback, "view_class", None) or getattr(
            pattern.callback, "cls", None
        )
        methods = [
            m
            for m in ("get", "post", "put", "patch", "delete")
            if view is not None and hasattr(view, m)
        ]
        for m in methods:
            routes.append((name, m))
    return sorted(set(routes))


ROUTES = api_routes()


def test_every_api_route_has_a_rule():
    missing = [r for r in ROUTES if r not in RULES]
    assert not missing, f"routes without an authorization rule: {missing}"
    stale = [r for r in RULES if r not in ROUTES]
    assert not stale, f"rules for routes that no longer exist: {stale}"


def _artifact(run: Any, path: str, *, received: bool = False, complete: bool = False) -> Any:
    sha = hashlib.sha256(ARTIFACT_BYTES).hexdigest()
    artifact, _ = artifact_services.create_artifact(
        run, path=path, size=len(ARTIFACT_BYTES), sha256=sha
    )
    if received or complete:
        artifact_services.receive_chunk(artifact.pk, 0, ARTIFACT_BYTES)
    if complete:
        artifact = artifact_services.complete_artifact(artifact.pk)
    return artifact


def _upload_job(project: Any, user: Any, path: str, *, received: bool) -> Any:
    # Each job declares its own path: a path declared again moves to the newer upload.
    files = [{"path": path, "size": 1}]
    job = uploads.create_upload(project=project, user=user, files=files, runs_mode="merge")
    if received:
        uploads.append_chunk(job=job, path=path, offset=0, data=b"x")
    return job


@pytest.fixture
def world(tenants, local_storage):
    # Chunked (local) storage: artifact chunks go through the API instead of presigned S3
    # parts, so every artifact route has a body the server accepts.
    t = tenants
    t.dave = UserFactory(username="dave")
    t.erin = UserFactory(username="erin")
    ProjectMembership.objects.create(project=t.vision, user=t.dave, role=Role.VIEWER)
    t.run = RunFactory(project=t.vision, created_by=t.bob)
    t.link, _ = create_share_link(project=t.vision, user=t.alice)
    t.alice_token, _ = create_token(user=t.alice, name="alice-cli")
    t.job = _upload_job(t.vision, t.bob, "r/events.out.tfevents.1", received=False)
    t.job_received = _upload_job(t.vision, t.bob, "s/events.out.tfevents.1", received=True)
    t.image = media_services.log_images(
        t.run, json.dumps([{"key": "samples", "step": 0, "field": "f"}]), {"f": io.BytesIO(_png())}
    )[0]
    t.artifact_pending = _artifact(t.run, "pending.pt")
    t.artifact_received = _artifact(t.run, "received.pt", received=True)
    t.artifact_ready = _artifact(t.run, "ready.pt", complete=True)
    t.other_run = RunFactory(project=t.secret)
    t.public = ProjectFactory(workspace=t.umbrella, slug="open", visibility="public")
    return t


def _path_values(t: Any, name: str) -> dict[str, Any]:
    user_id = t.dave.pk if name == "api:project-member-detail" else t.carol.pk
    return {
        "ws": "acme",
        "project": "vision",
        "run_id": t.run.pk,
        "user_id": user_id,
        "link_id": t.link.pk,
        "token_id": t.alice_token.pk,
        "job_id": t.job_received.pk if name == "api:upload-finish" else t.job.pk,
        "image_id": t.image.pk,
        "artifact_id": {
            "api:artifact-content": t.artifact_pending.pk,
            "api:artifact-complete": t.artifact_received.pk,
            "api:artifact-parts": t.artifact_pending.pk,
        }.get(name, t.artifact_ready.pk),
    }


def _client(t: Any, who: str, token_for: Any) -> tuple[APIClient, dict[str, str]]:
    c = APIClient()
    query: dict[str, str] = {}
    if who in {"alice", "bob", "carol", "mallory"}:
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(getattr(t, who))}")
    elif who == "revoked_token":
        token, secret = create_token(user=t.alice, name="old")
        token.revoked_at = timezone.now()
        token.save()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    elif who == "expired_token":
        token, secret = create_token(user=t.alice, name="old")
        ApiToken.objects.filter(pk=token.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    elif who == "share_other_project":
        _, secret = create_share_link(project=t.secret, user=t.mallory)
        query["share"] = secret
    elif who == "share_revoked":
        link, secret = create_share_link(project=t.vision, user=t.alice)
        link.revoked_at = timezone.now()
        link.save()
        query["share"] = secret
    return c, query


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("route", ROUTES, ids=[f"{n}:{m}" for n, m in ROUTES])
def test_route_authorization(route, who, world, token_for):
    from django.urls import reverse

    name, method = route
    rule = RULES.get(route)
    if rule is None:
        pytest.fail(f"{route} has no rule in RULES")
    pattern_kwargs = next(
        p for n, p, _ in _walk(get_resolver().url_patterns) if n == name
    ).pattern.converters
    values = _path_values(world, name)
    missing = [k for k in pattern_kwargs if k not in values]
    assert not missing, f"add a value for URL parameter(s) {missing} in _path_values"
    url = reverse(name, kwargs={k: values[k] for k in pattern_kwargs})
    client, query = _client(world, who, token_for)
    params = [f"{k}={v}" for k, v in query.items()]
    if rule.query:
        params.append(rule.query.format(run_id=world.run.pk))
    if params:
        url += "?" + "&".join(params)
    kwargs: dict[str, Any] = {"format": "json"}
    if isinstance(rule.body, bytes):
        kwargs = {"data": rule.body, "content_type": "application/octet-stream"}
    elif callable(rule.body):
        kwargs = {"data": rule.body(), "format": "multipart"}
    elif rule.body is not None:
        kwargs["data"] = rule.body
    response = getattr(client, method)(url, **kwargs)
    expected = expected_status(rule, who)
    assert response.status_code == expected, (
        f"{method.upper()} {url} as {who}: expected {expected}, got {response.status_code} "
        f"{response.content[:300]!r}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if expected == 404:
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}

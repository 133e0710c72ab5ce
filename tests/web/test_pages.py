"""View tests of the web UI: roles and controls, tenancy (404s), share links, CSRF, escaping,
query counts. Real PostgreSQL, real S3 (moto server), real services for the data."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
STYLE_ATTR = re.compile(r"<[^>]+\sstyle=", re.I)


def html(resp: Any) -> str:
    return resp.content.decode()


def assert_csp_clean(resp: Any) -> None:
    body = html(resp)
    assert not INLINE_SCRIPT.search(body), "inline <script> in page"
    assert not STYLE_ATTR.search(body), "inline style attribute in page"
    assert "script-src 'self'" in resp["Content-Security-Policy"]


# --- roles and controls ---------------------------------------------------------------------


def test_project_page_controls_by_role(filled, web):
    t = filled
    alice = html(web(t.alice).get("/acme/vision/"))
    bob = html(web(t.bob).get("/acme/vision/"))
    carol = web(t.carol).get("/acme/vision/")
    assert carol.status_code == 200
    assert_csp_clean(carol)
    carol = html(carol)
    for page in (alice, bob, carol):
        assert "resnet-a" in page and "resnet-b" in page
        assert 'id="runs-table"' in page
    assert 'id="settings-link"' in alice
    assert 'id="upload-form"' in alice
    assert 'id="upload-form"' in bob and 'id="settings-link"' not in bob
    assert 'id="upload-form"' not in carol and 'id="settings-link"' not in carol
    assert "csrfmiddlewaretoken" in alice  # the upload form carries CSRF


def test_settings_only_for_owners(filled, web):
    t = filled
    resp = web(t.alice).get("/acme/vision/settings")
    assert resp.status_code == 200
    body = html(resp)
    assert 'id="invite-form"' in body and 'id="create-link-form"' in body
    assert_csp_clean(resp)
    assert web(t.bob).get("/acme/vision/settings").status_code == 403
    assert web(t.carol).get("/acme/vision/settings").status_code == 403
    assert web(t.mallory).get("/acme/vision/settings").status_code == 404


def test_workspace_page(filled, web):
    t = filled
    resp = web(t.carol).get("/acme/")
    assert resp.status_code == 200
    body = html(resp)
    assert "vision" in body and "alice" in body and "bob" in body
    assert web(t.mallory).get("/acme/").status_code == 404
    assert web(t.alice).get("/umbrella/").status_code == 404


def tenant_urls(t: Any) -> list[str]:
    r = t.run1.pk
    return [
        "/acme/vision/",
        f"/acme/vision/runs/{r}/",
        f"/acme/vision/runs/{r}/?tab=images",
        f"/acme/vision/compare?runs={t.run1.pk},{t.run2.pk}",
        "/acme/vision/settings",
        f"/acme/vision/data/series?runs={r}&keys=loss",
        f"/acme/vision/data/histograms?run={r}&key=weights",
        f"/acme/vision/images/{t.img0.pk}",
        f"/acme/vision/artifacts/{t.artifact.pk}/download",
    ]


def test_other_tenant_gets_404_everywhere(filled, web):
    t = filled
    mallory = web(t.mallory)
    for url in tenant_urls(t):
        assert mallory.get(url).status_code == 404, url
    # ...and cannot reach acme objects through their own project's URLs either.
    r = t.run1.pk
    for url in (
        f"/umbrella/secret/runs/{r}/",
        f"/umbrella/secret/compare?runs={r}",
        f"/umbrella/secret/data/series?runs={r}&keys=loss",
        f"/umbrella/secret/images/{t.img0.pk}",
        f"/umbrella/secret/artifacts/{t.artifact.pk}/download",
    ):
        assert mallory.get(url).status_code == 404, url
    # A member of acme cannot mix in umbrella's run either.
    assert web(t.alice).get(f"/acme/vision/compare?runs={r},{t.secret_run.pk}").status_code == 404


def test_anonymous_redirected_to_login_for_private_pages(filled, web):
    t = filled
    anon = web()
    for url in [
        "/acme/vision/",
        f"/acme/vision/runs/{t.run1.pk}/",
        "/acme/vision/settings",
        "/acme/",
        "/tokens/",
    ]:
        resp = anon.get(url)
        assert resp.status_code == 302, url
        assert resp["Location"].startswith("/login/?next="), url
    assert anon.get(f"/acme/vision/data/series?runs={t.run1.pk}&keys=loss").status_code == 404


def test_public_project_is_readable_without_login(filled, web):
    t = filled
    t.vision.visibility = "public"
    t.vision.save()
    anon = web()
    resp = anon.get("/acme/vision/")
    assert resp.status_code == 200
    body = html(resp)
    assert (
        "resnet-a" in body
        and 'id="upload-form"' not in body
        and "settings" not in body.lower().split("<main>")[1]
    )
    assert anon.get(f"/acme/vision/runs/{t.run1.pk}/").status_code == 200
    assert anon.get("/acme/vision/settings").status_code == 302  # login first
    assert web(t.mallory).get("/acme/vision/settings").status_code == 403


# --- run page --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tab",
    [
        "charts",
        "images",
        "histograms",
        "text",
        "hparams",
        "monitoring",
        "artifacts",
        "params",
        "logs",
    ],
)
def test_run_tabs_render(filled, web, tab):
    t = filled
    resp = web(t.carol).get(f"/acme/vision/runs/{t.run1.pk}/?tab={tab}")
    assert resp.status_code == 200
    assert_csp_clean(resp)
    body = html(resp)
    assert f'id="tab-{tab}"' in body
    expected = {
        "charts": ['data-key="loss"', 'data-key="val/acc"'],
        "images": [f"/acme/vision/images/{t.img1.pk}", 'class="stepslider"'],
        "histograms": ["weights"],
        "text": ["&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x()&lt;/script&gt;"],
        "hparams": ["optimizer", "adam"],
        "monitoring": ['data-key="sys/cpu_percent"'],
        "artifacts": ["checkpoints/epoch1.pt", f"/acme/vision/artifacts/{t.artifact.pk}/download"],
        "params": ["lr", "0.001"],
        "logs": ["not uploaded from a logdir"],
    }[tab]
    for needle in expected:
        assert needle in body, needle
    if tab == "charts":
        assert 'data-key="sys/cpu_percent"' not in body


def test_series_data_json(filled, web):
    t = filled
    c = web(t.carol)
    data = c.get(f"/acme/vision/data/series?runs={t.run1.pk}&keys=loss,val/acc").json()
    by_key = {s["key"]: s for s in data["series"]}
    assert by_key["loss"]["step"] == [0, 1, 2, 3, 4]
    assert by_key["loss"]["value"][2] == "NaN"
    assert by_key["val/acc"]["value"][-1] == pytest.approx(0.7)
    zoomed = c.get(f"/acme/vision/data/series?runs={t.run1.pk}&keys=loss&start=1&end=3").json()
    assert zoomed["series"][0]["step"] == [1, 2, 3]
    both = c.get(f"/acme/vision/data/series?runs={t.run1.pk},{t.run2.pk}&keys=loss").json()
    assert {s["run"] for s in both["series"]} == {t.run1.pk, t.run2.pk}
    rel = c.get(f"/acme/vision/data/series?runs={t.run1.pk}&keys=loss&x=relative").json()
    assert rel["series"][0]["x"][0] == pytest.approx(0.0)


def test_histogram_data(filled, web):
    t = filled
    data = web(t.carol).get(f"/acme/vision/data/histograms?run={t.run1.pk}&key=weights").json()
    assert data["steps"][0]["bucket_counts"] == [1.0, 5.0, 2.0]


def test_image_served_with_type_and_nosniff(filled, web):
    t = filled
    resp = web(t.carol).get(f"/acme/vision/images/{t.img0.pk}")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "image/png"
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert b"".join(resp.streaming_content).startswith(b"\x89PNG")


def test_image_with_unknown_type_is_a_download(filled, web):
    from tests.web.conftest import add_image

    t = filled
    img = add_image(t.run1, "html", 0, b"<html><script>alert(1)</script>", mime="text/html")
    resp = web(t.carol).get(f"/acme/vision/images/{img.pk}")
    assert resp["Content-Type"] == "application/octet-stream"
    assert resp["Content-Disposition"] == "attachment"


def test_artifact_download(filled, web):
    t = filled
    resp = web(t.carol).get(f"/acme/vision/artifacts/{t.artifact.pk}/download")
    assert resp.status_code == 302
    import urllib.request

    with urllib.request.urlopen(resp["Location"]) as r:  # the real (moto) S3 server
        assert r.read() == b"checkpoint-bytes"


# --- escaping ----------------------------------------------------------------------------------


def test_user_content_is_escaped(filled, web):
    from tracker.services.runs import create_run

    t = filled
    evil = create_run(
        project=t.vision,
        user=t.bob,
        name="<script>alert(1)</script>",
        tags=["<img src=x onerror=alert(2)>"],
        params={"k": "<i>v</i>"},
    )
    c = web(t.carol)
    for url in (
        "/acme/vision/?cols=params.k",
        f"/acme/vision/runs/{evil.pk}/",
        f"/acme/vision/runs/{evil.pk}/?tab=params",
        f"/acme/vision/compare?runs={evil.pk},{t.run1.pk}",
    ):
        body = html(c.get(url))
        assert "<script>alert(1)</script>" not in body, url
        assert "<img src=x" not in body and "<i>v</i>" not in body, url
    body = html(c.get(f"/acme/vision/runs/{evil.pk}/"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=alert(2)&gt;" in body
    assert "&lt;i&gt;v&lt;/i&gt;" in html(c.get(f"/acme/vision/runs/{evil.pk}/?tab=params"))


# --- runs table -------------------------------------------------------------------------------


def test_runs_table_filter_sort_columns(filled, web):
    t = filled
    c = web(t.carol)
    body = html(c.get("/acme/vision/?cols=params.lr&cols=metrics.loss.last&sort=-params.lr"))
    assert "lr" in body and "loss (last)" in body
    assert body.index("resnet-b") < body.index("resnet-a")  # lr 0.01 first when descending
    body = html(c.get("/acme/vision/?sort=params.lr&cols=params.lr"))
    assert body.index("resnet-a") < body.index("resnet-b")
    body = html(c.get('/acme/vision/?filter=name ~ "resnet-a"'))
    assert "resnet-a" in body and ">resnet-b<" not in body
    # the column chooser is loaded when opened, with the current columns ticked
    chooser = html(c.get("/acme/vision/columns?cols=params.lr"))
    assert 'value="params.lr" checked' in chooser and 'value="metrics.val/acc.last"' in chooser
    assert 'value="params.optimizer"' in chooser
    assert web(filled.mallory).get("/acme/vision/columns").status_code == 404
    # htmx partial: only the panel, same state
    resp = c.get("/acme/vision/?sort=name", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="runs-panel")
    assert resp.status_code == 200
    assert "<html" not in html(resp) and 'id="runs-table"' in html(resp)


def test_runs_table_pagination(tenants, web):
    from tracker.models import Run

    Run.objects.bulk_create([Run(project=tenants.vision, name=f"r{i:03d}") for i in range(60)])
    c = web(tenants.carol)
    body = html(c.get("/acme/vision/?sort=name"))
    assert "r000" in body and "r049" in body and "r050" not in body
    nxt = re.search(r'id="next-page"|href="([^"]*cursor=[^"]*)"', body)
    url = (
        re.search(r'href="(/acme/vision/\?[^"]*cursor=[^"]*)"', body).group(1).replace("&amp;", "&")
    )
    assert nxt
    body2 = html(c.get(url))
    assert "r050" in body2 and "r059" in body2 and "r000<" not in body2


def _project_queries(web: Any, user: Any) -> int:
    c = web(user)
    c.get("/acme/vision/?cols=params.lr,metrics.loss.last")  # warm session/user caches
    with CaptureQueriesContext(connection) as ctx:
        resp = c.get("/acme/vision/?cols=params.lr,metrics.loss.last&sort=-params.lr")
    assert resp.status_code == 200
    return len(ctx.captured_queries)


def test_project_page_query_count_is_fixed(tenants, web):
    from tests.web.conftest import add_points
    from tracker.services.runs import create_run

    def make(n: int, start: int) -> None:
        for i in range(start, start + n):
            run = create_run(
                project=tenants.vision,
                user=tenants.bob,
                name=f"q{i}",
                params={"lr": i / 1000},
                tags=["t"],
            )
            add_points(run, "loss", [1.0, 0.5])

    make(5, 0)
    five = _project_queries(web, tenants.alice)
    make(45, 5)
    fifty = _project_queries(web, tenants.alice)
    assert five == fifty, (five, fifty)
    assert fifty <= 15


# --- compare ----------------------------------------------------------------------------------


def test_compare_page(filled, web):
    t = filled
    resp = web(t.carol).get(f"/acme/vision/compare?runs={t.run1.pk},{t.run2.pk}")
    assert resp.status_code == 200
    assert_csp_clean(resp)
    body = html(resp)
    assert 'class="differs"' in body  # lr and optimizer differ
    assert "data-pc=" in body and 'data-key="loss"' in body
    assert f'data-runs="{t.run1.pk},{t.run2.pk}"' in body
    diff = html(web(t.carol).get(f"/acme/vision/compare?runs={t.run1.pk}&runs={t.run2.pk}&diff=1"))
    assert "optimizer" in diff and "<th>layers</th>" not in diff


# --- share links ------------------------------------------------------------------------------


def _create_link(web: Any, t: Any, **fields: Any) -> str:
    resp = web(t.alice).post("/acme/vision/settings", {"action": "create_link", **fields})
    assert resp.status_code == 200, html(resp)
    m = re.search(r'value="http://testserver(/s/[^"/]+/)"', html(resp))
    assert m, "the new link is shown once"
    return m.group(1)


def test_share_link_project_scope(filled, web):
    t = filled
    base = _create_link(web, t, label="reviewers", expires_days="7")
    anon = web()
    resp = anon.get(base)
    assert resp.status_code == 200
    body = html(resp)
    assert "resnet-a" in body and "resnet-b" in body and "shared · read-only" in body
    assert 'id="upload-form"' not in body and "settings" not in body.split("<main>")[1].lower()
    assert f'href="{base}runs/{t.run1.pk}/"' in body  # sub-pages stay under the token
    run = anon.get(f"{base}runs/{t.run1.pk}/?tab=images")
    assert run.status_code == 200 and f"{base}images/{t.img0.pk}" in html(run)
    assert anon.get(f"{base}images/{t.img0.pk}")["Content-Type"] == "image/png"
    assert anon.get(f"{base}data/series?runs={t.run1.pk}&keys=loss").status_code == 200
    assert anon.get(f"{base}compare?runs={t.run1.pk},{t.run2.pk}").status_code == 200
    # nothing outside the scope
    assert anon.get(f"{base}runs/{t.secret_run.pk}/").status_code == 404
    assert anon.get(f"{base}settings").status_code == 404
    assert anon.get("/acme/vision/").status_code == 302
    # the settings page counts its uses
    page = html(web(t.alice).get("/acme/vision/settings"))
    assert "reviewers" in page and base.split("/")[2] not in page  # secret never shown again
    # revoke → not found
    from tracker.models import ShareLink

    link = ShareLink.objects.get(label="reviewers")
    assert link.use_count >= 5
    web(t.alice).post("/acme/vision/settings", {"action": "revoke_link", "link": link.pk})
    gone = anon.get(base)
    assert gone.status_code == 404 and 'id="not-found"' in html(gone)
    assert anon.get(f"{base}images/{t.img0.pk}").status_code == 404


def test_share_link_run_scope_and_expiry(filled, web):
    t = filled
    base = _create_link(web, t, run=str(t.run1.pk))
    anon = web()
    body = html(anon.get(base))
    assert "resnet-a" in body and "resnet-b" not in body
    assert anon.get(f"{base}runs/{t.run1.pk}/").status_code == 200
    assert anon.get(f"{base}runs/{t.run2.pk}/").status_code == 404
    assert anon.get(f"{base}compare?runs={t.run1.pk},{t.run2.pk}").status_code == 404
    from tracker.models import ShareLink

    ShareLink.objects.filter(run=t.run1).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert anon.get(base).status_code == 404
    assert anon.get("/s/shr_not-a-real-token/").status_code == 404


def test_only_owners_create_links(filled, web):
    t = filled
    assert web(t.bob).post("/acme/vision/settings", {"action": "create_link"}).status_code == 403
    assert (
        web(t.mallory).post("/acme/vision/settings", {"action": "create_link"}).status_code == 404
    )


# --- members and visibility ---------------------------------------------------------------------


def test_members_invite_change_remove_and_last_owner(filled, web):
    from tests.factories import UserFactory
    from tracker.models import Membership

    t = filled
    UserFactory(username="dave", email="dave@example.com")
    alice = web(t.alice)
    resp = alice.post(
        "/acme/vision/settings",
        {"action": "invite", "identifier": "dave@example.com", "role": "viewer"},
    )
    assert resp.status_code == 200 and "dave joined as viewer" in html(resp)
    m = Membership.objects.get(user__username="dave")
    alice.post(
        "/acme/vision/settings",
        {"action": "change_role", "membership": m.pk, "role": "contributor"},
    )
    m.refresh_from_db()
    assert m.role == "contributor"
    alice.post("/acme/vision/settings", {"action": "remove", "membership": m.pk})
    assert not Membership.objects.filter(pk=m.pk).exists()
    own = Membership.objects.get(user=t.alice, workspace=t.acme)
    resp = alice.post(
        "/acme/vision/settings", {"action": "change_role", "membership": own.pk, "role": "viewer"}
    )
    assert resp.status_code == 400 and "last owner" in html(resp)
    resp = alice.post("/acme/vision/settings", {"action": "remove", "membership": own.pk})
    assert resp.status_code == 400
    own.refresh_from_db()
    assert own.role == "owner"
    resp = alice.post(
        "/acme/vision/settings", {"action": "invite", "identifier": "nobody", "role": "viewer"}
    )
    assert resp.status_code == 400 and "No active user" in html(resp)
    # mallory's memberships cannot be addressed from acme
    mal = Membership.objects.get(user=t.mallory)
    assert (
        alice.post("/acme/vision/settings", {"action": "remove", "membership": mal.pk}).status_code
        == 404
    )


def test_visibility(filled, web):
    t = filled
    web(t.alice).post("/acme/vision/settings", {"action": "visibility", "visibility": "public"})
    t.vision.refresh_from_db()
    assert t.vision.visibility == "public"
    assert web(t.mallory).get("/acme/vision/").status_code == 200


# --- CSRF -------------------------------------------------------------------------------------


def test_forms_enforce_csrf(filled, web):
    t = filled
    c = web(t.alice, enforce_csrf_checks=True)
    assert (
        c.post(
            "/acme/vision/settings", {"action": "visibility", "visibility": "public"}
        ).status_code
        == 403
    )
    assert c.post("/tokens/", {"action": "create", "name": "x"}).status_code == 403
    t.vision.refresh_from_db()
    assert t.vision.visibility == "private"
    # with the token from the rendered form it works
    page = html(c.get("/acme/vision/settings"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    resp = c.post(
        "/acme/vision/settings",
        {"action": "visibility", "visibility": "public", "csrfmiddlewaretoken": token},
    )
    assert resp.status_code == 200


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_page(filled, web):
    from tracker.models import ApiToken

    t = filled
    c = web(t.bob)
    resp = c.post(
        "/tokens/",
        {
            "action": "create",
            "name": "laptop",
            "workspace": "acme",
            "role": "viewer",
            "expires_days": "30",
        },
    )
    assert resp.status_code == 200
    secret = re.search(r'value="(trk_[^"]+)"', html(resp)).group(1)
    token = ApiToken.objects.get(user=t.bob, name="laptop")
    assert token.role == "viewer" and token.workspace == t.acme
    listing = html(c.get("/tokens/"))
    assert "laptop" in listing and secret not in listing
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/me/").status_code == 200
    c.post("/tokens/", {"action": "revoke", "token": token.pk})
    assert api.get("/api/v1/me/").status_code == 401
    # someone else's token cannot be revoked
    other = ApiToken.objects.create(user=t.carol, name="c", prefix="x", token_hash="h" * 64)
    assert c.post("/tokens/", {"action": "revoke", "token": other.pk}).status_code == 404
    assert (
        c.post("/tokens/", {"action": "create", "name": "", "workspace": "umbrella"}).status_code
        == 404
    )


# --- empty states -----------------------------------------------------------------------------


def test_empty_state_shows_commands(tenants, web):
    body = html(web(tenants.bob).get("/acme/vision/"))
    assert "pip install ./client" in body
    assert "tracker login --url http://testserver" in body
    assert "tracker upload ./logs --project acme/vision" in body
    assert 'client.init(project="acme/vision"' in body
    viewer = html(web(tenants.carol).get("/acme/vision/"))
    assert "No runs yet" in viewer and "pip install" not in viewer


def test_home_lists_projects(filled, web):
    body = html(web(filled.carol).get("/"))
    assert "acme/vision" in body and "umbrella" not in body

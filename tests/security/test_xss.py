"""Stored XSS: user text is escaped on every page, returned as plain JSON by the API, and images
are served with their sniffed type and nosniff; SVG/HTML are not images."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.security.conftest import png_bytes
from tracker.models import Image

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(2)>'
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(3)">'
    b"<script>alert(4)</script></svg>"
)
HTML = b"<!doctype html><html><body><script>alert(5)</script></body></html>"
RAW_MARKERS = ["<script>alert", "<img src=x", "onerror=alert(2)>", 'onload="alert']

TABS = ["charts", "images", "histograms", "text", "hparams", "monitoring", "artifacts", "params"]


@pytest.fixture
def evil(api: Any, tenants: Any) -> dict[str, Any]:
    """User content with payloads in every free-text field, written through the API."""
    bob, alice = api(tenants.bob), api(tenants.alice)
    assert (
        alice.patch(
            "/api/v1/projects/acme/vision/", {"name": f"P{SCRIPT}", "description": ATTR}
        ).status_code
        == 200
    )
    alice.patch("/api/v1/workspaces/acme/", {"name": f"W{ATTR}"}, format="json")
    r = bob.post(
        "/api/v1/projects/acme/vision/runs/",
        {"name": SCRIPT, "tags": [ATTR, "ok"], "notes": f"{SCRIPT}{ATTR}", "params": {"p": ATTR}},
        format="json",
    )
    assert r.status_code == 201, r.content
    run = r.json()
    assert r["Content-Type"] == "application/json"
    assert run["name"] == SCRIPT and run["tags"][0] == ATTR  # stored as given, escaped on output
    rid = run["id"]
    body = {"series": [{"key": "loss", "steps": [0, 1], "values": [1.0, 0.5]}]}
    assert bob.post(f"/api/v1/runs/{rid}/metrics/", body, format="json").status_code == 200
    text = {"items": [{"key": "summary", "step": 0, "value": f"{SCRIPT} {ATTR}"}]}
    assert bob.post(f"/api/v1/runs/{rid}/text/", text, format="json").status_code == 200
    meta = [{"key": "samples", "step": 0, "caption": f"{SCRIPT}{ATTR}", "field": "f0"}]
    r = bob.post(
        f"/api/v1/runs/{rid}/images/",
        {"meta": json.dumps(meta), "f0": SimpleUploadedFile("a.png", png_bytes())},
    )
    assert r.status_code == 201, r.content
    r = bob.post(
        f"/api/v1/runs/{rid}/artifacts/",
        {
            "path": f"ck/{SCRIPT}.pt",
            "size": 0,
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    r = alice.post("/api/v1/projects/acme/vision/share-links/", {"label": SCRIPT}, format="json")
    assert r.status_code == 201
    return {"run": rid, "image": Image.objects.get(run_id=rid).pk, "share": r.json()["token"]}


def assert_escaped(body: str, url: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in body, (url, marker, body[max(0, body.find(marker) - 200) :][:400])


def test_every_page_escapes_user_content(evil: dict[str, Any], tenants: Any) -> None:
    alice = Client()
    alice.force_login(tenants.alice)
    rid, share = evil["run"], evil["share"]
    urls = [
        "/",
        "/acme/",
        "/acme/vision/",
        "/acme/vision/?cols=params.p,metrics.loss.last",
        "/acme/vision/settings",
        "/tokens/",
        f"/acme/vision/compare?runs={rid}",
        "/acme/vision/columns?cols=params.p",
        *[f"/acme/vision/runs/{rid}/?tab={tab}" for tab in TABS],
        f"/s/{share}/",
        *[f"/s/{share}/runs/{rid}/?tab={tab}" for tab in TABS],
    ]
    seen_escaped = 0
    for url in urls:
        client = Client() if url.startswith("/s/") else alice
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
        body = r.content.decode()
        assert_escaped(body, url)
        seen_escaped += body.count("&lt;script&gt;alert(1)&lt;/script&gt;")
        assert r["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self'" in r["Content-Security-Policy"]
    assert seen_escaped > 5  # the payloads were on the pages, escaped


def test_api_returns_user_text_as_plain_json(evil: dict[str, Any], api: Any, tenants: Any) -> None:
    carol = api(tenants.carol)
    rid = evil["run"]
    for url in [
        f"/api/v1/runs/{rid}/",
        "/api/v1/projects/acme/vision/runs/",
        f"/api/v1/runs/{rid}/media/text?key=summary",
        f"/api/v1/runs/{rid}/images/",
        f"/api/v1/runs/{rid}/artifacts/",
        f"/api/v1/runs/{rid}/export",
        "/api/v1/projects/acme/vision/runs/table?columns=name,tags,params.p",
    ]:
        r = carol.get(url)
        assert r.status_code == 200, url
        assert r["Content-Type"].startswith("application/json"), url
        assert r["X-Content-Type-Options"] == "nosniff"
        raw = b"".join(r.streaming_content) if r.streaming else r.content
        assert SCRIPT in json.dumps(json.loads(raw), ensure_ascii=False), url  # data, not markup


@pytest.mark.parametrize(
    "payload,name,ctype",
    [
        (SVG, "x.svg", "image/svg+xml"),
        (SVG, "x.png", "image/png"),
        (HTML, "x.html", "text/html"),
        (HTML, "x.png", "image/png"),
        (b"GIF89a" + HTML, "x.gif", "image/gif"),  # a polyglot header alone is no image
        (b"\x89PNG\r\n\x1a\n" + HTML, "x.png", "image/png"),
    ],
)
def test_svg_and_html_are_not_images(
    api: Any, tenants: Any, acme: Any, payload: bytes, name: str, ctype: str
) -> None:
    before = Image.objects.count()
    meta = [{"key": "evil", "step": 1, "field": "f0"}]
    r = api(tenants.bob).post(
        f"/api/v1/runs/{acme.run.pk}/images/",
        {"meta": json.dumps(meta), "f0": SimpleUploadedFile(name, payload, content_type=ctype)},
    )
    assert 400 <= r.status_code < 500, r.content
    assert r.json()["error"]["code"]
    assert Image.objects.count() == before


def test_images_are_served_with_sniffed_type_and_nosniff(api: Any, tenants: Any, acme: Any) -> None:
    carol = api(tenants.carol)
    r = carol.get(f"/api/v1/images/{acme.image_id}/content")
    assert r.status_code in (200, 302)
    if r.status_code == 200:
        assert r["Content-Type"] == "image/png"
        assert r["X-Content-Type-Options"] == "nosniff"
    else:  # presigned S3 URL: the content type is pinned in the signature
        assert "response-content-type=image%2Fpng" in r["Location"]
    web = Client()
    web.force_login(tenants.carol)
    r = web.get(f"/acme/vision/images/{acme.image_id}")
    assert r.status_code in (200, 302)
    if r.status_code == 200:
        assert r["Content-Type"] == "image/png"
        assert r["X-Content-Type-Options"] == "nosniff"
    else:
        assert "response-content-type=image%2Fpng" in r["Location"]


def test_csv_export_guards_text_cells(api: Any, tenants: Any, acme: Any) -> None:
    """Cross-check of tests/query/test_exports.py: a key starting with '-' or '@' is text."""
    bob = api(tenants.bob)
    body = {"series": [{"key": "-cmd", "steps": [0], "values": [-1.5]}]}
    assert bob.post(f"/api/v1/runs/{acme.run.pk}/metrics/", body, format="json").status_code == 200
    r = bob.get(f"/api/v1/runs/{acme.run.pk}/series/export?format=csv&keys=-cmd")
    assert r.status_code == 200
    rows = b"".join(r.streaming_content).decode().splitlines()
    assert rows[1].startswith("'-cmd,0,") and rows[1].endswith(",-1.5")

"""Oversized and deeply nested bodies (JSON, gzip, multipart) and query-language injection:
each refused with a 4xx, nothing stored, never a 500."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.security.conftest import png_bytes
from tracker.models import Image, Run, Series

pytestmark = pytest.mark.django_db

LIMIT = 64 * 1024


@pytest.fixture
def small_bodies(settings: Any) -> int:
    settings.TRACKER_MAX_JSON_BODY = LIMIT
    return LIMIT


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_oversized_json_is_413_on_core_and_batch_endpoints(
    api: Any, tenants: Any, acme: Any, small_bodies: int
) -> None:
    bob = api(tenants.bob)
    runs_before = Run.objects.count()
    big = json.dumps({"name": "x", "notes": "n" * (LIMIT + 10)})
    r = bob.post("/api/v1/projects/acme/vision/runs/", big, content_type="application/json")
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert Run.objects.count() == runs_before
    steps = list(range(20000))
    body = json.dumps({"series": [{"key": "big", "steps": steps, "values": steps}]})
    assert len(body) > LIMIT
    r = bob.post(f"/api/v1/runs/{acme.run.pk}/metrics/", body, content_type="application/json")
    assert r.status_code == 413
    assert not Series.objects.filter(key="big").exists()


def test_gzip_bomb_is_413(api: Any, tenants: Any, acme: Any, small_bodies: int) -> None:
    bob = api(tenants.bob)
    inner = (
        b'{"series": [{"key": "z", "steps": [0], "values": [1], "pad": "'
        + b" " * (50 * LIMIT)
        + b'"}]}'
    )
    bomb = gzip.compress(inner)
    assert len(bomb) < LIMIT / 10
    for url in (f"/api/v1/runs/{acme.run.pk}/metrics/", f"/api/v1/runs/{acme.run.pk}/params/"):
        r = bob.post(url, bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
        assert r.status_code == 413, (url, r.status_code)
    r = bob.post(
        f"/api/v1/runs/{acme.run.pk}/metrics/",
        b"\x1f\x8b not gzip",
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert r.status_code == 400
    assert not Series.objects.filter(key="z").exists()


@pytest.mark.parametrize("depth", [40, 2000, 200_000])
def test_deep_nesting_is_400_everywhere(api: Any, tenants: Any, acme: Any, depth: int) -> None:
    bob = api(tenants.bob)
    deep = nested(depth)
    cases = [
        ("/api/v1/projects/acme/vision/runs/", f'{{"name": "d", "params": {{"p": {deep}}}}}'),
        (f"/api/v1/runs/{acme.run.pk}/params/", f'{{"params": {{"p": {deep}}}}}'),
        (f"/api/v1/runs/{acme.run.pk}/metrics/", f'{{"series": {deep}}}'),
        (f"/api/v1/runs/{acme.run.pk}/text/", f'{{"items": {deep}}}'),
        (f"/api/v1/runs/{acme.run.pk}/histograms/", f'{{"items": {deep}}}'),
        (f"/api/v1/runs/{acme.run.pk}/artifacts/", f'{{"path": {deep}}}'),
        ("/api/v1/projects/acme/vision/uploads/", f'{{"files": {deep}}}'),
    ]
    runs_before = Run.objects.count()
    for url, body in cases:
        r = bob.post(url, body, content_type="application/json")
        assert r.status_code == 400, (url, depth, r.status_code, r.content[:200])
        assert r.json()["error"]["code"]
    assert Run.objects.count() == runs_before


@pytest.mark.parametrize("meta", [nested(200_000), "[" + "{}," * 500_000 + "{}]", "x" * 3_000_000])
def test_multipart_meta_nesting_and_size(api: Any, tenants: Any, acme: Any, meta: str) -> None:
    before = Image.objects.count()
    r = api(tenants.bob).post(
        f"/api/v1/runs/{acme.run.pk}/images/",
        {"meta": meta, "f0": SimpleUploadedFile("a.png", png_bytes())},
    )
    assert r.status_code in (400, 413), (r.status_code, r.content[:200])
    assert Image.objects.count() == before


def test_multipart_with_too_many_fields_is_400(api: Any, tenants: Any, acme: Any) -> None:
    fields = {f"f{i}": SimpleUploadedFile(f"{i}.png", b"x") for i in range(10)}
    fields.update({f"junk{i}": "1" for i in range(2500)})  # > DATA_UPLOAD_MAX_NUMBER_FIELDS
    meta = json.dumps([{"key": "k", "step": 0, "field": "f0"}])
    r = api(tenants.bob).post(f"/api/v1/runs/{acme.run.pk}/images/", {"meta": meta, **fields})
    assert r.status_code == 400, r.status_code
    r = api(tenants.bob).post(
        "/api/v1/projects/acme/vision/uploads/archive",
        {"file": SimpleUploadedFile("a.zip", b"PK\x05\x06" + b"\0" * 18), **fields},
    )
    assert r.status_code == 400


def test_malformed_multipart_is_400(api: Any, tenants: Any, acme: Any) -> None:
    r = api(tenants.bob).generic(
        "POST",
        f"/api/v1/runs/{acme.run.pk}/images/",
        b"--b\r\nContent-Disposition: form-data; name=meta\r\n\r\n[",  # no closing boundary
        content_type="multipart/form-data; boundary=b",
    )
    assert 400 <= r.status_code < 500


def test_sort_columns_and_cursor_injection(api: Any, tenants: Any, acme: Any) -> None:
    carol = api(tenants.carol)
    url = "/api/v1/projects/acme/vision/runs/table"
    hostile_sorts = [
        "name; DROP TABLE tracker_run",
        "params.lr') --",
        "-metrics.loss.last; select pg_sleep(5)",
        "__class__",
        'params["a\'; drop table tracker_run; --"]',
        "metrics.loss.pg_sleep",
    ]
    for sort in hostile_sorts:
        r = carol.get(url, {"sort": sort})
        assert r.status_code in (200, 400), (sort, r.status_code)
    for cols in ["name,(select 1)", "params.x'||'y", "metrics.loss.last;--", "id" + ",id" * 500]:
        r = carol.get(url, {"columns": cols})
        assert r.status_code in (200, 400), (cols, r.status_code)
    r = carol.get(url, {"cursor": "eyJ4IjogMX0.forged"})
    assert r.status_code == 400
    r = carol.get(url, {"filter": 'params["x\\" or 1=1 --"] = 1'})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json()["results"] == []
    assert Run.objects.filter(pk=acme.run.pk).exists()
    # series keys and ranges
    for q in [{"keys": "loss'--", "max_points": "1e309"}, {"from": "nan", "to": "inf"}]:
        r = carol.get(f"/api/v1/runs/{acme.run.pk}/series/", q)
        assert r.status_code in (200, 400), (q, r.status_code)


def test_nul_in_query_lists_is_400_not_a_broken_stream(api: Any, tenants: Any, acme: Any) -> None:
    """Found by schemathesis: a NUL in `keys` reached PostgreSQL inside a streamed export."""
    carol = api(tenants.carol)
    for url in (
        f"/api/v1/runs/{acme.run.pk}/series/export?format=csv&keys=lo%00ss",
        f"/api/v1/runs/{acme.run.pk}/series/export?format=jsonl&keys=%00",
        f"/api/v1/runs/{acme.run.pk}/series/?keys=a%00b",
        f"/api/v1/projects/acme/vision/series?runs={acme.run.pk}&keys=a%00b",
        "/api/v1/projects/acme/vision/hparams?metrics=a%00b",
        "/api/v1/projects/acme/vision/runs/table?columns=params.a%00b",
    ):
        r = carol.get(url)
        assert r.status_code == 400, (url, r.status_code)
        assert r.json()["error"]["code"] == "invalid"

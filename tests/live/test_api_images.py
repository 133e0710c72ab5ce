"""POST/GET /runs/{id}/images/ and GET /images/{id}/content: verification, storage, reads."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from tests.live.conftest import image_bytes, png_bytes
from tracker.models import Blob, IdempotencyRecord, Image
from tracker.storage import get_blob_store

pytestmark = pytest.mark.django_db


def post_images(
    client: Any, run: Any, items: list[tuple[dict, bytes]], key: str | None = None
) -> Any:
    meta, files = [], {}
    for i, (item, data) in enumerate(items):
        field = item.pop("field", f"f{i}")
        meta.append({**item, "field": field})
        files[field] = SimpleUploadedFile(f"{field}.png", data, content_type="image/png")
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"/api/v1/runs/{run.pk}/images/", {"meta": json.dumps(meta), **files}, **headers
    )


def bucket_keys() -> list[str]:
    store = get_blob_store()
    resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return [o["Key"].removeprefix(store.prefix) for o in resp.get("Contents", [])]


def test_formats_are_sniffed_stored_and_thumbnailed(api, tenants, run):
    items = [
        ({"key": "samples", "step": 1, "caption": "red"}, png_bytes(8, 6)),
        ({"key": "samples", "step": 2}, image_bytes("JPEG", 5, 4)),
        ({"key": "samples", "step": 3}, image_bytes("GIF")),
        ({"key": "samples", "step": 4}, image_bytes("WEBP")),
        ({"key": "big", "step": 0, "index": 1}, png_bytes(600, 300)),
    ]
    r = post_images(api(tenants.bob), run, items, key="img-batch-1")
    assert r.status_code == 201, r.content
    out = r.json()["images"]
    assert [i["mime"] for i in out] == [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/png",
    ]
    assert (out[0]["width"], out[0]["height"]) == (8, 6)
    rows = {(i.key, i.step, i.index): i for i in Image.objects.filter(run=run)}
    assert len(rows) == 5
    first = rows[("samples", 1, 0)]
    assert first.caption == "red"
    assert get_blob_store().read_bytes(first.blob_id) == items[0][1]
    assert Blob.objects.filter(sha256=first.blob_id).exists()
    # Eager tasks: thumbnails exist already; small images are their own thumbnail.
    assert first.thumbnail_id == first.blob_id
    big = rows[("big", 0, 1)]
    assert big.thumbnail_id != big.blob_id
    with PILImage.open(io.BytesIO(get_blob_store().read_bytes(big.thumbnail_id))) as th:
        assert th.format == "WEBP" and max(th.size) == 256


def test_declared_type_is_ignored(api, tenants, run):
    data = image_bytes("JPEG")
    meta = [{"key": "k", "step": 0, "field": "f"}]
    f = SimpleUploadedFile("evil.html", data, content_type="text/html")
    r = api(tenants.bob).post(f"/api/v1/runs/{run.pk}/images/", {"meta": json.dumps(meta), "f": f})
    assert r.status_code == 201
    assert r.json()["images"][0]["mime"] == "image/jpeg"


def test_reupload_same_key_step_index_replaces(api, tenants, run):
    c = api(tenants.bob)
    post_images(c, run, [({"key": "k", "step": 0}, png_bytes(color=(1, 2, 3)))])
    post_images(c, run, [({"key": "k", "step": 0}, png_bytes(color=(9, 9, 9)))])
    img = Image.objects.get(run=run)
    assert get_blob_store().read_bytes(img.blob_id) == png_bytes(color=(9, 9, 9))


def test_replay_stores_once(api, tenants, run):
    c = api(tenants.bob)
    items = [({"key": "k", "step": 0}, png_bytes())]
    first = post_images(c, run, list(items), key="img-key-0001")
    again = post_images(c, run, [({"key": "k", "step": 7}, png_bytes())], key="img-key-0001")
    assert again.status_code == 201 and again.json() == first.json()
    assert Image.objects.filter(run=run).count() == 1


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!doctype html><html><script>alert(1)</script></html>"


def _fake_png() -> bytes:
    good = png_bytes(16, 16)
    return good[:40] + b"\x00" * 30 + good[70:]  # corrupt IDAT: CRC fails


def _bomb() -> bytes:
    buf = io.BytesIO()
    PILImage.new("1", (8000, 8000)).save(buf, format="PNG")  # 64 MP, a few KB
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (SVG, 400, "invalid_image"),
        (HTML, 400, "invalid_image"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 400, "invalid_image"),
        (_fake_png(), 400, "invalid_image"),
        (png_bytes()[:-20], 400, "invalid_image"),
        (b"", 400, "invalid_image"),
        (image_bytes("BMP"), 400, "invalid_image"),
        (image_bytes("TIFF"), 400, "invalid_image"),
        (_bomb(), 413, "too_many_pixels"),
    ],
    ids=[
        "svg",
        "html",
        "png-header-garbage",
        "bad-crc",
        "truncated",
        "empty",
        "bmp",
        "tiff",
        "bomb",
    ],
)
def test_bad_images_refused_nothing_stored(api, tenants, run, data, status, code):
    items = [({"key": "ok", "step": 0}, png_bytes()), ({"key": "bad", "step": 0}, data)]
    r = post_images(api(tenants.bob), run, items)
    assert r.status_code == status, r.content
    err = r.json()["error"]
    assert err["code"] == code and err["field"] == "f1" and err["message"]
    assert not Image.objects.exists() and not Blob.objects.exists()
    assert bucket_keys() == []


def test_oversized_file_refused(api, tenants, run):
    data = png_bytes() + b"\x00" * (20 * 1024 * 1024)
    r = post_images(api(tenants.bob), run, [({"key": "k", "step": 0}, data)])
    assert r.status_code == 413
    assert "20 MB" in r.json()["error"]["message"]
    assert not Image.objects.exists()


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ("not json", "meta"),
        ("[]", "meta"),
        ('{"a": 1}', "meta"),
        ('[{"key": "k", "step": -1, "field": "f0"}]', "meta[0].step"),
        ('[{"key": "k", "step": 1.5, "field": "f0"}]', "meta[0].step"),
        ('[{"key": "k/../x", "step": 1, "field": "f0"}]', "meta[0].key"),
        ('[{"key": "k", "step": 1, "field": "missing"}]', "meta[0].field"),
        ('[{"key": "k", "step": 1, "field": "f0", "wall_time": "x"}]', "meta[0].wall_time"),
        ('[{"key": "k", "step": 1, "field": "f0", "caption": 5}]', "meta[0].caption"),
        (
            '[{"key": "k", "step": 1, "field": "f0"}, {"key": "k", "step": 1, "field": "f1"}]',
            "meta[1].index",
        ),
    ],
)
def test_bad_meta(api, tenants, run, meta, field):
    files = {f"f{i}": SimpleUploadedFile(f"f{i}.png", png_bytes()) for i in range(2)}
    r = api(tenants.bob).post(f"/api/v1/runs/{run.pk}/images/", {"meta": meta, **files})
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert not Image.objects.exists()


def test_too_many_images(api, tenants, run):
    items = [({"key": "k", "step": i}, png_bytes()) for i in range(65)]
    r = post_images(api(tenants.bob), run, items)
    assert r.status_code in (400, 413)
    assert not Image.objects.exists()


def test_roles_on_upload_and_read(api, tenants, run):
    items = [({"key": "k", "step": 0}, png_bytes())]
    assert post_images(api(tenants.carol), run, list(items)).status_code == 403
    assert post_images(api(tenants.mallory), run, list(items)).status_code == 404
    r = post_images(api(tenants.bob), run, list(items))
    image_id = r.json()["images"][0]["id"]
    assert api(tenants.carol).get(f"/api/v1/images/{image_id}/content").status_code == 200
    assert api(tenants.mallory).get(f"/api/v1/images/{image_id}/content").status_code == 404
    assert api(tenants.mallory).get(f"/api/v1/runs/{run.pk}/images/").status_code == 404
    assert api(tenants.carol).get("/api/v1/images/99999999/content").status_code == 404


def test_content_is_served_with_sniffed_type_and_nosniff(api, tenants, run):
    data = png_bytes(600, 300)
    r = post_images(api(tenants.bob), run, [({"key": "k", "step": 0}, data)])
    image_id = r.json()["images"][0]["id"]
    c = api(tenants.carol)
    resp = c.get(f"/api/v1/images/{image_id}/content")
    assert resp.status_code == 200 and resp.content == data
    assert resp["Content-Type"] == "image/png"
    assert resp["X-Content-Type-Options"] == "nosniff"
    thumb = c.get(f"/api/v1/images/{image_id}/content?thumb=1")
    assert thumb["Content-Type"] == "image/webp" and thumb.content != data
    again = c.get(f"/api/v1/images/{image_id}/content", HTTP_IF_NONE_MATCH=resp["ETag"])
    assert again.status_code == 304


def test_list_filters_by_key_and_has_fixed_query_count(
    api, tenants, run, django_assert_max_num_queries, django_assert_num_queries
):
    c = api(tenants.carol)
    post_images(api(tenants.bob), run, [({"key": "a", "step": i}, png_bytes()) for i in range(3)])
    post_images(api(tenants.bob), run, [({"key": "b", "step": 0}, png_bytes())])
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    c.get(f"/api/v1/runs/{run.pk}/images/")  # warm-up: the token's first use records last_used
    reset_queries()  # each request resets the log; start the capture from an empty one
    with CaptureQueriesContext(connection) as small:
        r = c.get(f"/api/v1/runs/{run.pk}/images/?key=a")
    n_small = len(small)  # read now: later requests reset the query log
    assert [i["step"] for i in r.json()["results"]] == [0, 1, 2]
    item = r.json()["results"][0]
    assert set(item) >= {
        "key",
        "step",
        "index",
        "caption",
        "width",
        "height",
        "mime",
        "sha256",
        "url",
    }
    assert c.get(item["url"]).status_code == 200
    post_images(
        api(tenants.bob), run, [({"key": "a", "step": i}, png_bytes()) for i in range(3, 40)]
    )
    assert 0 < n_small <= 8
    with django_assert_num_queries(n_small):
        r = c.get(f"/api/v1/runs/{run.pk}/images/?key=a&limit=100")
    assert len(r.json()["results"]) == 40
    with django_assert_max_num_queries(n_small):
        page = c.get(f"/api/v1/runs/{run.pk}/images/?limit=10")
    assert len(page.json()["results"]) == 10 and page.json()["next"]


def test_thumbnails_by_a_real_worker(celery_worker, api, tenants, run):
    r = post_images(api(tenants.bob), run, [({"key": "k", "step": 0}, png_bytes(800, 400))])
    assert r.status_code == 201
    image_id = r.json()["images"][0]["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        img = Image.objects.get(pk=image_id)
        if img.thumbnail_id:
            break
        time.sleep(0.1)
    assert img.thumbnail_id and img.thumbnail_id != img.blob_id
    with PILImage.open(io.BytesIO(get_blob_store().read_bytes(img.thumbnail_id))) as th:
        assert th.size == (256, 128)
    assert not IdempotencyRecord.objects.exists()

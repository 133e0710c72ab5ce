"""S3 answering 500s, stalling, or down: boto3 retries what it can; what it cannot becomes a 503
the client retries with its Idempotency-Key. No row ever points at a missing blob, nothing is
stored twice, and abandoned multipart uploads are aborted by the clean-up tasks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import S3Server
from tests.faults.helpers import FaultyHttpProxy
from tests.security.conftest import png_bytes
from tracker.models import Artifact, Blob, Image
from tracker.storage import get_blob_store

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]


@pytest.fixture
def proxy(
    s3_server: S3Server, s3_storage: dict[str, str], settings: Any
) -> Iterator[FaultyHttpProxy]:
    p = FaultyHttpProxy(s3_server.port)
    settings.TRACKER_STORAGE = {
        **s3_storage,
        "S3_ENDPOINT_URL": p.url,
        "S3_PUBLIC_ENDPOINT_URL": p.url,
    }
    yield p
    p.close()


@pytest.fixture
def run(tenants: Any) -> Any:
    from tests.factories import RunFactory

    return RunFactory(project=tenants.vision, created_by=tenants.bob)


def every_row_has_its_blob() -> int:
    store = get_blob_store()
    shas = set(Blob.objects.values_list("sha256", flat=True))
    shas |= set(Image.objects.values_list("blob_id", flat=True))
    shas |= {s for s in Image.objects.values_list("thumbnail_id", flat=True) if s}
    shas |= {s for s in Artifact.objects.values_list("blob_id", flat=True) if s}
    missing = [s for s in shas if not store.exists(s)]
    assert not missing, missing
    return len(shas)


def post_image(client: Any, run: Any, key: str, step: int, data: bytes, idem: str) -> Any:
    meta = [{"key": key, "step": step, "field": "f0"}]
    return client.post(
        f"/api/v1/runs/{run.pk}/images/",
        {"meta": json.dumps(meta), "f0": SimpleUploadedFile("a.png", data)},
        HTTP_IDEMPOTENCY_KEY=idem,
    )


def test_transient_500s_and_slow_responses_are_retried(
    api: Any, tenants: Any, run: Any, proxy: FaultyHttpProxy
) -> None:
    bob = api(tenants.bob)
    proxy.fail_next(3, 500)
    r = post_image(bob, run, "img", 0, png_bytes(9, 9), "idem-transient-1")
    assert r.status_code == 201, r.content
    assert proxy.injected == 3  # boto3 retried past them
    proxy.fail_next(2, 503)
    proxy.delay = 0.5
    r = post_image(bob, run, "img", 1, png_bytes(10, 10), "idem-transient-2")
    assert r.status_code == 201, r.content
    proxy.delay = 0
    assert Image.objects.filter(run=run).count() == 2
    assert every_row_has_its_blob() >= 2


def test_s3_down_is_503_nothing_stored_then_retry_stores_once(
    api: Any, tenants: Any, run: Any, proxy: FaultyHttpProxy, settings: Any
) -> None:
    bob = api(tenants.bob)
    data = png_bytes(11, 7)
    proxy.down = True
    r = post_image(bob, run, "down", 5, data, "idem-down-1")
    assert r.status_code == 503, r.content
    assert r.json()["error"]["code"] == "unavailable" and r["Retry-After"]
    assert not Image.objects.filter(run=run).exists()
    assert not Blob.objects.filter(sha256=hashlib.sha256(data).hexdigest()).exists()
    # Artifact creation needs S3 (multipart): refused, no row left half-made.
    body = {"path": "m.bin", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    r = bob.post(f"/api/v1/runs/{run.pk}/artifacts/", body, format="json")
    assert r.status_code == 503
    assert not Artifact.objects.filter(run=run).exclude(upload_id="").exists()
    proxy.down = False
    # The client retries with the same key: stored once.
    for _ in range(2):
        r = post_image(bob, run, "down", 5, data, "idem-down-1")
        assert r.status_code == 201, r.content
    assert Image.objects.filter(run=run, key="down").count() == 1
    r = bob.post(f"/api/v1/runs/{run.pk}/artifacts/", body, format="json")
    assert r.status_code == 201
    every_row_has_its_blob()


def test_artifact_complete_during_outage_never_marks_ready(
    api: Any, tenants: Any, run: Any, proxy: FaultyHttpProxy
) -> None:
    import requests

    bob = api(tenants.bob)
    data = b"checkpoint bytes" * 100
    body = {"path": "c.pt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    art = bob.post(f"/api/v1/runs/{run.pk}/artifacts/", body, format="json").json()
    etag = requests.put(art["upload"]["parts"][0]["url"], data=data, timeout=30).headers["ETag"]
    proxy.down = True
    r = bob.post(
        f"/api/v1/artifacts/{art['id']}/complete/",
        {"parts": [{"number": 1, "etag": etag}]},
        format="json",
    )
    assert r.status_code == 503
    row = Artifact.objects.get(pk=art["id"])
    assert row.state == "pending" and row.blob_id is None
    proxy.down = False
    r = bob.post(
        f"/api/v1/artifacts/{art['id']}/complete/",
        {"parts": [{"number": 1, "etag": etag}]},
        format="json",
    )
    assert r.status_code == 200 and r.json()["state"] == "ready", r.content
    assert get_blob_store().read_bytes(body["sha256"]) == data
    every_row_has_its_blob()


def test_cleanup_aborts_orphaned_and_stale_multipart_uploads(
    api: Any, tenants: Any, run: Any
) -> None:
    from tracker import tasks, tasks_media
    from tracker.services import artifacts

    store = get_blob_store()
    client, bucket = store.client, store.bucket
    # An orphan: created, then the transaction that would have recorded it rolled back.
    orphan_key = store.upload_key("artifact-999999-orphan")
    orphan = client.create_multipart_upload(Bucket=bucket, Key=orphan_key)["UploadId"]
    client.put_object(Bucket=bucket, Key=f"{store.prefix}tmp/leftover", Body=b"x")
    # A pending artifact whose client went away.
    body = {"path": "gone.bin", "size": 5, "sha256": hashlib.sha256(b"gone!").hexdigest()}
    art = api(tenants.bob).post(f"/api/v1/runs/{run.pk}/artifacts/", body, format="json").json()
    row = Artifact.objects.get(pk=art["id"])
    assert row.upload_id

    def uploads() -> set[str]:
        resp = client.list_multipart_uploads(Bucket=bucket, Prefix=store.prefix)
        return {u["UploadId"] for u in resp.get("Uploads", [])}

    assert {orphan, row.upload_id} <= uploads()
    # A young tmp/ object is left alone. (moto reports every multipart upload as initiated
    # in 2010, so the age rule for uploads is exercised on real S3/MinIO only.)
    assert tasks.cleanup_stale_uploads.apply(kwargs={}).get()["tmp_deleted"] == 0
    assert row.upload_id in uploads()  # owned by a pending row: never the orphan sweep's
    # Old enough: the orphan goes, the row's upload is not the orphan sweep's to abort...
    result = tasks.cleanup_stale_uploads.apply(kwargs={"older_than_hours": 0}).get()
    assert result["tmp_deleted"] == 1
    assert result["aborted"] <= 1  # the orphan (unless the first sweep took it already)
    assert orphan not in uploads() and row.upload_id in uploads()
    # ...but the stale pending row's own clean-up aborts it (and the row says so).
    Artifact.objects.filter(pk=row.pk).update(updated_at=row.updated_at - timedelta(days=2))
    assert tasks_media.cleanup_uploads.apply().get() == 1
    row.refresh_from_db()
    assert row.upload_id == "" and row.state == "pending" and row.blob_id is None
    assert uploads() == set()
    # The client comes back: create again, upload, complete.
    assert artifacts.cleanup_stale_uploads(timedelta(0)) == 0

"""Large S3 artifact uploads: completed as soon as S3 holds the bytes, sha256 checked by the
worker. The upload is downloadable meanwhile; only bytes the server hashed itself ever reach a
content address (`blobs/<sha>` is shared by every tenant), and a mismatch fails the artifact.

The API tests run the real Celery task in-process (`.apply`) where a worker would pick up the
message; the last test runs the real client against gunicorn and a real worker on Redis.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.utils import timezone

from tests.live.test_api_artifacts import bucket_keys, complete, create, put_parts
from tracker.models import Artifact, ArtifactState, Blob
from tracker.services import artifacts as artifact_services
from tracker.storage import get_blob_store
from tracker.tasks_media import reconcile_verifications, verify_artifact

MB = 1024 * 1024


@pytest.fixture
def deferred(settings: Any) -> None:
    """A server with a worker, and every S3 upload large enough to be verified by it."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.TRACKER_ARTIFACT_VERIFY_INLINE_MAX = 0


def upload(
    client: Any, run: Any, sent: bytes, capture: Any, declared: bytes | None = None, **kw: Any
) -> tuple[int, Any, list]:
    """Create (declaring `declared`, default `sent`), PUT `sent` as the parts, complete."""
    body = create(client, run, sent if declared is None else declared, **kw).json()
    parts = put_parts(body["upload"], sent)
    with capture() as callbacks:  # the Celery message, sent on commit; the test runs the task
        done = complete(client, body["id"], parts)
    return body["id"], done, callbacks


def download(client: Any, artifact_id: int) -> bytes:
    r = client.get(f"/api/v1/artifacts/{artifact_id}/download")
    assert r.status_code == 302, r.content
    got = httpx.get(r["Location"])
    assert got.status_code == 200
    return got.content


def test_large_upload_is_verifying_then_ready_and_downloadable_throughout(
    deferred, api, tenants, run, django_capture_on_commit_callbacks
):
    bob, carol = api(tenants.bob), api(tenants.carol)
    data = os.urandom(9 * MB + 5)
    sha = hashlib.sha256(data).hexdigest()
    art_id, done, callbacks = upload(bob, run, data, django_capture_on_commit_callbacks)
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["state"] == "verifying" and body["error"] is None and body["download_url"]
    assert len(callbacks) == 1  # one verification message
    row = Artifact.objects.get(pk=art_id)
    assert row.blob_id is None and not Blob.objects.filter(sha256=sha).exists()
    assert [k for k in bucket_keys() if k.startswith("blobs/")] == []  # nothing hashed yet
    # Downloadable right away, from the object S3 assembled.
    assert download(carol, art_id) == data
    # A retried complete, or the client declaring the same file again: nothing to do.
    assert complete(bob, art_id, []).json()["state"] == "verifying"
    again = create(bob, run, data).json()
    assert again["state"] == "verifying" and again["upload"] is None
    assert create(bob, run, b"other").json()["error"]["code"] == "artifact_exists"

    assert verify_artifact.apply(args=[art_id]).get() == "ready"
    row.refresh_from_db()
    assert row.state == ArtifactState.READY and row.blob_id == sha
    assert bucket_keys() == [f"blobs/{sha}"]  # adopted under its content address, upload gone
    assert get_blob_store().read_bytes(sha) == data
    assert download(carol, art_id) == data
    # A duplicate message (redelivery, re-send) changes nothing.
    assert verify_artifact.apply(args=[art_id]).get() is None
    assert bucket_keys() == [f"blobs/{sha}"]


def test_corrupted_upload_fails_and_never_becomes_a_blob(
    deferred, api, tenants, run, django_capture_on_commit_callbacks
):
    bob = api(tenants.bob)
    data = os.urandom(9 * MB)
    corrupted = data[:100] + bytes([data[100] ^ 1]) + data[101:]  # same size: passes that check
    art_id, done, _ = upload(bob, run, corrupted, django_capture_on_commit_callbacks, declared=data)
    assert done.json()["state"] == "verifying"
    assert verify_artifact.apply(args=[art_id]).get() == "failed"

    row = Artifact.objects.get(pk=art_id)
    assert row.state == ArtifactState.FAILED and row.blob_id is None
    assert "upload_key" not in row.metadata
    assert bucket_keys() == []  # neither sha has a blob; the uploaded object is deleted
    shas = [hashlib.sha256(b).hexdigest() for b in (data, corrupted)]
    assert not Blob.objects.filter(sha256__in=shas).exists()
    # The client learns it on its next look.
    detail = bob.get(f"/api/v1/artifacts/{art_id}/").json()
    assert detail["state"] == "failed" and detail["download_url"] is None
    assert detail["error"]["code"] == "checksum_mismatch"
    r = bob.get(f"/api/v1/artifacts/{art_id}/download")
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_failed"
    assert complete(bob, art_id, []).json()["error"]["code"] == "no_upload"

    # Logging it again restarts from scratch, and the good bytes become ready.
    again, done, _ = upload(bob, run, data, django_capture_on_commit_callbacks)
    assert again == art_id and done.json()["state"] == "verifying"
    assert verify_artifact.apply(args=[art_id]).get() == "ready"
    assert Artifact.objects.get(pk=art_id).metadata.get("error") is None
    assert bucket_keys() == [f"blobs/{shas[0]}"]


def test_claiming_content_one_does_not_hold_never_changes_a_blob(
    deferred, api, tenants, run, other_run, django_capture_on_commit_callbacks
):
    """mallory (another tenant) declares the sha256 of bob's file but sends other bytes."""
    bob, mallory = api(tenants.bob), api(tenants.mallory)
    capture = django_capture_on_commit_callbacks
    secret = os.urandom(9 * MB)
    sha = hashlib.sha256(secret).hexdigest()
    junk = os.urandom(len(secret))

    # Before bob's file exists anywhere: the claim fails and blobs/<sha> is never written.
    claim, done, _ = upload(mallory, other_run, junk, capture, declared=secret)
    assert done.json()["state"] == "verifying"
    assert verify_artifact.apply(args=[claim]).get() == "failed"
    assert not get_blob_store().exists(sha)
    # bob's real upload is unaffected.
    real, _, _ = upload(bob, run, secret, capture)
    assert verify_artifact.apply(args=[real]).get() == "ready"
    assert get_blob_store().read_bytes(sha) == secret

    # After it exists: the claim fails again, and bob's blob still holds bob's bytes.
    claim2, _, _ = upload(mallory, other_run, junk, capture, declared=secret, path="b.pt")
    assert verify_artifact.apply(args=[claim2]).get() == "failed"
    assert get_blob_store().read_bytes(sha) == secret
    assert Artifact.objects.get(pk=claim2).blob_id is None
    assert mallory.get(f"/api/v1/artifacts/{real}/download").status_code == 404


def test_lost_verification_is_sent_again_and_a_lost_object_fails(
    deferred, api, tenants, run, django_capture_on_commit_callbacks
):
    bob = api(tenants.bob)
    capture = django_capture_on_commit_callbacks
    data = os.urandom(MB)
    art_id, _, _ = upload(bob, run, data, capture)
    # Its message is lost (Redis keeps nothing on disk): fresh, it is left alone.
    assert artifact_services.reconcile_verifications() == 0
    Artifact.objects.filter(pk=art_id).update(updated_at=timezone.now() - timedelta(hours=1))
    with capture() as callbacks:
        assert reconcile_verifications.apply().get() == 1
    assert len(callbacks) == 1
    assert verify_artifact.apply(args=[art_id]).get() == "ready"
    assert artifact_services.reconcile_verifications(timedelta(0)) == 0

    # An uploaded object that disappeared before the check (lifecycle rule, operator) fails.
    lost, _, _ = upload(bob, run, data, capture, path="lost.bin")
    store = get_blob_store()
    store.delete_key(Artifact.objects.get(pk=lost).metadata["upload_key"])
    assert verify_artifact.apply(args=[lost]).get() == "failed"
    assert "gone" in Artifact.objects.get(pk=lost).metadata["error"]["message"]


def test_upload_of_a_deleted_run_is_swept_not_adopted(
    deferred, api, tenants, run, django_capture_on_commit_callbacks
):
    from tests.factories import RunFactory
    from tracker import tasks

    bob = api(tenants.bob)
    capture = django_capture_on_commit_callbacks
    kept, _, _ = upload(bob, run, os.urandom(MB), capture, path="kept.bin")
    doomed_run = RunFactory(project=tenants.vision, created_by=tenants.bob)
    data = os.urandom(MB)
    doomed, _, _ = upload(bob, doomed_run, data, capture)
    key = Artifact.objects.get(pk=doomed).metadata["upload_key"]
    doomed_run.delete()  # its verifying artifact goes with it
    assert verify_artifact.apply(args=[doomed]).get() is None  # nothing to adopt it for
    assert not get_blob_store().exists(hashlib.sha256(data).hexdigest())
    assert tasks.cleanup_stale_uploads.apply(kwargs={}).get()["uploads_deleted"] == 0  # young
    result = tasks.cleanup_stale_uploads.apply(kwargs={"older_than_hours": 0}).get()
    assert result["uploads_deleted"] == 1
    keys = bucket_keys()
    assert key.removeprefix(get_blob_store().prefix) not in keys
    # The live verifying artifact's object is its own: kept, and it still becomes ready.
    assert len([k for k in keys if k.startswith("uploads/")]) == 1
    assert verify_artifact.apply(args=[kept]).get() == "ready"


def test_small_uploads_are_still_verified_in_the_request(
    api, tenants, run, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a worker exists, but 1 MB is under the limit
    bob = api(tenants.bob)
    art_id, done, callbacks = upload(bob, run, os.urandom(MB), django_capture_on_commit_callbacks)
    assert done.json()["state"] == "ready" and callbacks == []


# --- per-part CRC32: S3 checks each part in transit ----------------------------------------------
def crc32_parts(data: bytes, part_size: int = 8 * MB) -> list[str]:
    return [
        base64.b64encode(zlib.crc32(data[i : i + part_size]).to_bytes(4, "big")).decode()
        for i in range(0, len(data), part_size)
    ]


def declared(data: bytes, **over: Any) -> dict[str, Any]:
    return {"algorithm": "crc32", "part_size": 8 * MB, "values": crc32_parts(data), **over}


def upload_id_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["uploadId"][0]


def test_part_crc32s_are_signed_into_the_part_urls(api, tenants, run):
    bob = api(tenants.bob)
    data = os.urandom(9 * MB + 5)
    crcs = crc32_parts(data)
    body = create(bob, run, data, part_checksums=declared(data)).json()
    upload = body["upload"]
    assert upload["checksum"] == "crc32"
    for part, crc in zip(upload["parts"], crcs, strict=True):
        assert part["headers"] == {"x-amz-checksum-crc32": crc}
        signed = parse_qs(urlsplit(part["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
        assert "x-amz-checksum-crc32" in signed  # a PUT without it (or with another) is refused
    store = get_blob_store()
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert [u["ChecksumAlgorithm"] for u in uploads["Uploads"]] == ["CRC32"]
    # Resuming with the same declaration keeps the upload; the parts go with their CRC32.
    again = create(bob, run, data, part_checksums=declared(data)).json()["upload"]
    assert upload_id_of(again["parts"][0]["url"]) == upload_id_of(upload["parts"][0]["url"])
    size = upload["part_size"]
    parts = []
    for p in again["parts"]:
        chunk = data[(p["number"] - 1) * size : p["number"] * size]
        r = httpx.put(p["url"], content=chunk, headers=p["headers"])
        assert r.status_code == 200, r.text
        parts.append({"number": p["number"], "etag": r.headers["ETag"]})
    done = complete(bob, body["id"], parts).json()
    assert done["state"] == "ready"
    assert get_blob_store().read_bytes(hashlib.sha256(data).hexdigest()) == data


def test_part_crc32s_restart_ignore_and_switch_off(api, tenants, run, settings):
    bob = api(tenants.bob)
    data = os.urandom(MB)
    first = create(bob, run, data, part_checksums=declared(data)).json()["upload"]
    # Declared without them now: another upload (its parts would lack their checksums).
    plain = create(bob, run, data).json()["upload"]
    assert plain["checksum"] is None and "headers" not in plain["parts"][0]
    assert upload_id_of(plain["parts"][0]["url"]) != upload_id_of(first["parts"][0]["url"])
    # Computed over other parts than the server's: ignored, the upload goes without.
    other = create(bob, run, data, path="b.bin", part_checksums=declared(data, part_size=16 * MB))
    assert other.status_code == 201 and other.json()["upload"]["checksum"] is None
    # An S3-compatible server without flexible checksums: switched off.
    settings.TRACKER_STORAGE = {**settings.TRACKER_STORAGE, "S3_PART_CHECKSUMS": "off"}
    off = create(bob, run, data, path="c.bin", part_checksums=declared(data)).json()
    assert off["upload"]["checksum"] is None


def test_client_plans_the_parts_the_server_plans():
    from tracker_client.artifacts import part_size_for as client_part_size

    for size in (0, 1, 8 * MB, 80 * 1024**3, 80 * 1024**3 + 1, 5 * 1024**4):
        assert client_part_size(size) == artifact_services.part_size_for(size), size


@pytest.mark.parametrize(
    "bad",
    [
        "crc32",
        [],
        {"algorithm": "md5", "part_size": 8 * MB, "values": ["AAAAAA=="]},
        {"algorithm": "crc32", "part_size": "8388608", "values": ["AAAAAA=="]},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": "AAAAAA=="},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": []},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": ["AAAAAA==", "AAAAAA=="]},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": ["AAAAAAAA"]},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": ["AAAA!A=="]},
        {"algorithm": "crc32", "part_size": 8 * MB, "values": [5]},
    ],
)
def test_bad_part_checksums(api, tenants, run, bad):
    r = create(api(tenants.bob), run, b"data", part_checksums=bad)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == "part_checksums"
    assert not Artifact.objects.exists()


# --- the real client, gunicorn and a worker --------------------------------------------------------
def test_client_finish_returns_before_verification_and_learns_the_verdict(
    tenants, token_for, server_env, client_env, tmp_path, celery_worker
):
    import tracker_client
    from tracker_client.artifacts import (
        ArtifactError,
        digest_file,
        upload_file,
        wait_verified,
    )
    from tracker_client.http import HttpClient

    from tests.live.conftest import Gunicorn

    env = {**server_env, "CELERY_TASK_ALWAYS_EAGER": "0", "TRACKER_ARTIFACT_VERIFY_INLINE_MAX": "0"}
    server = Gunicorn(env).start()
    token = token_for(tenants.bob)
    try:
        run = tracker_client.init(
            project="acme/vision", name="verify", url=server.url, token=token, telemetry=False
        )
        big = tmp_path / "model.pt"
        big.write_bytes(os.urandom(9 * MB + 17))
        run.log_artifact(big)
        run.finish()
        run.wait_for_artifacts(timeout=60)  # the worker checked it
        row = Artifact.objects.get(run_id=run.id, path="model.pt")
        sha = hashlib.sha256(big.read_bytes()).hexdigest()
        assert row.state == ArtifactState.READY and row.blob_id == sha
        store = get_blob_store()
        assert store.read_bytes(sha) == big.read_bytes()
        # The client declared each part's CRC32: the upload (and so its copy) is a CRC32 one.
        key = store.key(sha)
        head = store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
        assert "ChecksumCRC32" in head, head
        got = run.download_artifact("model.pt", tmp_path / "dl" / "")
        assert got.read_bytes() == big.read_bytes()

        http = HttpClient(server.url, token)
        # A file rewritten between hashing and the end of the upload is not completed.
        moving = tmp_path / "moving.bin"
        moving.write_bytes(os.urandom(2 * MB))
        before = digest_file(moving)
        signature, declared, size = before.signature, before.sha256, before.size
        moving.write_bytes(os.urandom(2 * MB))
        with pytest.raises(ArtifactError, match="changed while it was uploaded"):
            upload_file(
                http, run.id, moving, "moving.bin", sha256=declared, size=size, signature=signature
            )
        assert Artifact.objects.get(run_id=run.id, path="moving.bin").state == "pending"
        # A client without that guard gets "verifying", and the failure on its next look.
        done = upload_file(http, run.id, moving, "moving.bin", sha256=declared, size=size)
        assert done["state"] == "verifying"
        with pytest.raises(ArtifactError, match="do not match the declared sha256"):
            wait_verified(http, {done["id"]: "moving.bin"}, timeout=60)
        assert Artifact.objects.get(pk=done["id"]).state == ArtifactState.FAILED
        assert not get_blob_store().exists(declared)
    finally:
        server.stop()

"""Artifacts: S3 presigned multipart and chunked uploads, verification, download, roles."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from tracker.models import Artifact, ArtifactState, Blob
from tracker.services import artifacts as artifact_services
from tracker.storage import get_blob_store

pytestmark = pytest.mark.django_db

MB = 1024 * 1024


def create(client: Any, run: Any, data: bytes, path: str = "ckpt/model.pt", **over: Any) -> Any:
    body = {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **over}
    return client.post(f"/api/v1/runs/{run.pk}/artifacts/", body, format="json")


def put_parts(upload: dict, data: bytes) -> list[dict]:
    size = upload["part_size"]
    parts = []
    for p in upload["parts"]:
        chunk = data[(p["number"] - 1) * size : p["number"] * size]
        r = httpx.put(p["url"], content=chunk)
        assert r.status_code == 200, r.text
        parts.append({"number": p["number"], "etag": r.headers["ETag"]})
    return parts


def complete(client: Any, artifact_id: int, parts: Any = None) -> Any:
    body = {"parts": parts} if parts is not None else {}
    return client.post(f"/api/v1/artifacts/{artifact_id}/complete/", body, format="json")


def bucket_keys() -> list[str]:
    store = get_blob_store()
    resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return [o["Key"].removeprefix(store.prefix) for o in resp.get("Contents", [])]


def test_s3_multipart_upload_verify_and_download(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(9 * MB + 123)
    r = create(c, run, data)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["state"] == "pending" and body["upload"]["mode"] == "s3-multipart"
    assert body["upload"]["part_size"] == 8 * MB and len(body["upload"]["parts"]) == 2
    parts = put_parts(body["upload"], data)
    done = complete(c, body["id"], parts)
    assert done.status_code == 200, done.content
    assert done.json()["state"] == "ready"
    sha = hashlib.sha256(data).hexdigest()
    art = Artifact.objects.get(pk=body["id"])
    assert art.blob_id == sha and Blob.objects.filter(sha256=sha, size=len(data)).exists()
    assert bucket_keys() == [f"blobs/{sha}"]  # adopted under its content address, upload gone
    # Completing again (a retry after a lost response) is a no-op.
    assert complete(c, body["id"], parts).json()["state"] == "ready"
    # Same path and content again: nothing to upload.
    again = create(c, run, data)
    assert again.status_code == 201 and again.json()["state"] == "ready"
    assert again.json()["upload"] is None
    # Download: a viewer gets a redirect to a presigned URL that serves the bytes.
    dl = api(tenants.carol).get(f"/api/v1/artifacts/{body['id']}/download")
    assert dl.status_code == 302
    got = httpx.get(dl["Location"])
    assert got.content == data
    assert "model.pt" in got.headers["Content-Disposition"]


def test_checksum_mismatch_is_refused_and_upload_forgotten(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(1000)
    body = create(c, run, data).json()
    parts = put_parts(body["upload"], b"X" + data[1:])
    r = complete(c, body["id"], parts)
    assert r.status_code == 400 and r.json()["error"]["code"] == "checksum_mismatch"
    art = Artifact.objects.get(pk=body["id"])
    assert art.state == ArtifactState.PENDING and art.blob_id is None and art.upload_id == ""
    assert bucket_keys() == []
    # Starting again works.
    body = create(c, run, data).json()
    assert complete(c, body["id"], put_parts(body["upload"], data)).json()["state"] == "ready"


def test_size_mismatch(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(1000)
    body = create(c, run, data).json()
    r = complete(c, body["id"], put_parts(body["upload"], data[:900]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "size_mismatch"
    assert bucket_keys() == []


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [{"number": 2, "etag": "x"}],
        [{"number": 1}],
        "nope",
        [{"number": 1, "etag": '"bogus"'}],
        # found by schemathesis: a duplicate number with a non-ASCII ETag made S3 answer 500
        [{"number": 1, "etag": "0"}, {"number": 1, "etag": "\u0080\u00e9Ji="}],
        [{"number": 1, "etag": "caf\u00e9"}],
        [{"number": 1, "etag": "a" * 300}],
    ],
)
def test_bad_parts(api, tenants, run, parts):
    c = api(tenants.bob)
    data = os.urandom(100)
    body = create(c, run, data).json()
    put_parts(body["upload"], data)
    r = complete(c, body["id"], parts)
    assert r.status_code == 400
    assert r.json()["error"]["field"].startswith("parts")
    assert Artifact.objects.get(pk=body["id"]).state == ArtifactState.PENDING


def test_other_content_under_a_ready_path_conflicts(api, tenants, run):
    c = api(tenants.bob)
    data = b"first"
    body = create(c, run, data).json()
    complete(c, body["id"], put_parts(body["upload"], data))
    r = create(c, run, b"second")
    assert r.status_code == 409 and r.json()["error"]["code"] == "artifact_exists"
    assert Artifact.objects.get(pk=body["id"]).sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"path": "../etc/passwd"}, "path"),
        ({"path": "a/%2e%2e/b"}, "path"),
        ({"path": "a\\..\\b"}, "path"),
        ({"path": "/abs"}, "path"),
        ({"path": "C:/x"}, "path"),
        ({"path": "a\nb"}, "path"),
        ({"path": ""}, "path"),
        ({"path": 5}, "path"),
        ({"size": -1}, "size"),
        ({"size": 1.5}, "size"),
        ({"size": "10"}, "size"),
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": "g" * 64}, "sha256"),
    ],
)
def test_bad_declarations(api, tenants, run, over, field):
    r = create(api(tenants.bob), run, b"data", **over)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert not Artifact.objects.exists()


def test_paths_are_normalised(api, tenants, run):
    r = create(api(tenants.bob), run, b"x", path="./a//b/./c.txt")
    assert r.json()["path"] == "a/b/c.txt"


def test_empty_file_is_ready_at_once(api, tenants, run):
    r = create(api(tenants.bob), run, b"", path="empty.txt")
    assert r.status_code == 201 and r.json()["state"] == "ready" and r.json()["upload"] is None
    r = create(api(tenants.bob), run, b"", path="empty2.txt", sha256="0" * 64)
    assert r.status_code == 400


def test_roles_and_list_query_count(api, tenants, run, other_run, django_assert_num_queries):
    data = b"abc"
    assert create(api(tenants.carol), run, data).status_code == 403
    assert create(api(tenants.mallory), run, data).status_code == 404
    assert create(api(tenants.bob), other_run, data).status_code == 404
    c = api(tenants.bob)
    body = create(c, run, data).json()
    assert complete(api(tenants.carol), body["id"], []).status_code == 403
    assert complete(api(tenants.mallory), body["id"], []).status_code == 404
    assert api(tenants.mallory).get(f"/api/v1/artifacts/{body['id']}/download").status_code == 404
    # Not ready yet: nothing to download.
    assert api(tenants.carol).get(f"/api/v1/artifacts/{body['id']}/download").status_code == 409
    viewer = api(tenants.carol)
    viewer.get(f"/api/v1/runs/{run.pk}/artifacts/")  # warm-up (token last_used)
    with django_assert_num_queries(4):
        r = viewer.get(f"/api/v1/runs/{run.pk}/artifacts/")
    assert [a["path"] for a in r.json()["results"]] == ["ckpt/model.pt"]
    for i in range(20):
        create(c, run, data, path=f"f{i}.bin")
    with django_assert_num_queries(4):
        r = viewer.get(f"/api/v1/runs/{run.pk}/artifacts/?limit=50")
    assert len(r.json()["results"]) == 21
    assert api(tenants.mallory).get(f"/api/v1/runs/{run.pk}/artifacts/").status_code == 404


# --- chunked uploads (local blob directory) --------------------------------------------------------
def put_chunk(client: Any, artifact_id: int, offset: int, data: bytes) -> Any:
    return client.generic(
        "PUT",
        f"/api/v1/artifacts/{artifact_id}/content?offset={offset}",
        data,
        content_type="application/octet-stream",
    )


def test_chunked_upload_resume_and_download(local_storage, api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(3 * MB + 5)
    body = create(c, run, data).json()
    assert body["upload"] == {"mode": "chunked", "chunk_size": 8 * MB, "offset": 0}
    step = MB
    assert put_chunk(c, body["id"], 0, data[:step]).json() == {"offset": step}
    # A retried chunk (lost response) is told where to continue.
    r = put_chunk(c, body["id"], 0, data[:step])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "offset_mismatch"
    assert r.json()["error"]["expected_offset"] == step
    # Creating again resumes at the stored offset.
    assert create(c, run, data).json()["upload"]["offset"] == step
    assert complete(c, body["id"]).json()["error"]["code"] == "upload_incomplete"
    for off in range(step, len(data), step):
        assert put_chunk(c, body["id"], off, data[off : off + step]).status_code == 200
    assert put_chunk(c, body["id"], len(data), b"extra").status_code == 400
    assert complete(c, body["id"]).json()["state"] == "ready"
    dl = api(tenants.carol).get(f"/api/v1/artifacts/{body['id']}/download")
    assert dl.status_code == 200
    assert b"".join(dl.streaming_content) == data
    assert dl["X-Content-Type-Options"] == "nosniff"
    assert get_blob_store().read_bytes(hashlib.sha256(data).hexdigest()) == data


def test_chunked_checksum_mismatch(local_storage, api, tenants, run):
    c = api(tenants.bob)
    data = b"hello world"
    body = create(c, run, data).json()
    put_chunk(c, body["id"], 0, b"HELLO WORLD")
    r = complete(c, body["id"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "checksum_mismatch"
    art = Artifact.objects.get(pk=body["id"])
    assert art.state == ArtifactState.PENDING and art.bytes_received == 0
    assert not get_blob_store().exists(hashlib.sha256(b"HELLO WORLD").hexdigest())


def test_chunked_roles(local_storage, api, tenants, run):
    body = create(api(tenants.bob), run, b"abc").json()
    assert put_chunk(api(tenants.carol), body["id"], 0, b"abc").status_code == 403
    assert put_chunk(api(tenants.mallory), body["id"], 0, b"abc").status_code == 404
    assert Artifact.objects.get(pk=body["id"]).bytes_received == 0


def test_cleanup_aborts_stale_multipart_uploads(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(100)
    body = create(c, run, data).json()
    put_parts(body["upload"], data)
    art = Artifact.objects.get(pk=body["id"])
    store = get_blob_store()
    assert store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get(
        "Uploads"
    )
    assert artifact_services.cleanup_stale_uploads() == 0  # fresh: left alone
    Artifact.objects.filter(pk=art.pk).update(updated_at=timezone.now() - timedelta(days=2))
    from tracker.tasks_media import cleanup_uploads

    assert cleanup_uploads.apply().get() == 1
    assert not store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get(
        "Uploads"
    )
    art.refresh_from_db()
    assert art.upload_id == "" and art.state == ArtifactState.PENDING


def test_pending_s3_upload_is_resumed_with_the_same_upload(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(9 * MB)
    first = create(c, run, data).json()
    size = first["upload"]["part_size"]
    p1 = first["upload"]["parts"][0]
    etag1 = httpx.put(p1["url"], content=data[:size]).headers["ETag"]
    # The client crashed; it declares the same file again and sends only the missing part.
    again = create(c, run, data).json()
    assert again["id"] == first["id"]
    p2 = again["upload"]["parts"][1]
    etag2 = httpx.put(p2["url"], content=data[size:]).headers["ETag"]
    parts = [{"number": 1, "etag": etag1}, {"number": 2, "etag": etag2}]
    assert complete(c, first["id"], parts).json()["state"] == "ready"
    # Another file under the same pending path restarts the upload.
    other = os.urandom(10)
    body = create(c, run, other, path="x.bin").json()
    body2 = create(c, run, os.urandom(11), path="x.bin").json()
    assert body2["id"] == body["id"] and body2["size"] == 11


# --- sha256 declared at complete ("deferred": the client hashes while it sends) ----------------


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def create_deferred(client: Any, run: Any, size: int, path: str = "ckpt/big.pt") -> Any:
    return client.post(
        f"/api/v1/runs/{run.pk}/artifacts/", {"path": path, "size": size}, format="json"
    )


def sign(client: Any, artifact_id: int, parts: Any) -> Any:
    return client.post(f"/api/v1/artifacts/{artifact_id}/parts/", {"parts": parts}, format="json")


def put_signed(client: Any, artifact_id: int, data: bytes, size: int, numbers: list[int]) -> list:
    """Ask for each part's URL with its CRC32, PUT it with the signed headers; [{number, etag}]."""
    out = []
    for n in numbers:
        chunk = data[(n - 1) * size : n * size]
        r = sign(client, artifact_id, [{"number": n, "crc32": crc32_b64(chunk)}])
        assert r.status_code == 200, r.content
        (part,) = r.json()["parts"]
        assert part["number"] == n and part["headers"] == {"x-amz-checksum-crc32": crc32_b64(chunk)}
        put = httpx.put(part["url"], content=chunk, headers=part["headers"])
        assert put.status_code == 200, put.text
        out.append({"number": n, "etag": put.headers["ETag"]})
    return out


def test_deferred_sha256_upload_signs_parts_as_they_come(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(9 * MB + 5)
    sha = hashlib.sha256(data).hexdigest()
    r = create_deferred(c, run, len(data))
    assert r.status_code == 201, r.content
    body = r.json()
    upload = body["upload"]
    assert body["state"] == "pending" and body["sha256"] == ""
    assert upload["mode"] == "s3-multipart" and upload["parts"] == []
    assert upload["checksum"] == "crc32" and upload["upload_id"]
    # Part 2 first: parts are signed in whatever order the client hashes them.
    parts = put_signed(c, body["id"], data, upload["part_size"], [2, 1])
    # Without the sha256 it was never told: refused, nothing changes.
    r = complete(c, body["id"], parts)
    assert r.status_code == 400 and r.json()["error"]["field"] == "sha256"
    assert Artifact.objects.get(pk=body["id"]).state == ArtifactState.PENDING
    done = c.post(
        f"/api/v1/artifacts/{body['id']}/complete/", {"parts": parts, "sha256": sha}, format="json"
    )
    assert done.status_code == 200, done.content
    assert done.json()["state"] == "ready" and done.json()["sha256"] == sha
    art = Artifact.objects.get(pk=body["id"])
    assert art.blob_id == sha and art.metadata == {}
    assert bucket_keys() == [f"blobs/{sha}"]
    # Logged again without a sha256: the server answers the ready artifact (the client compares
    # its own hash); a different size under that path is other content.
    again = create_deferred(c, run, len(data))
    assert again.status_code == 201 and again.json()["upload"] is None
    assert again.json()["state"] == "ready" and again.json()["sha256"] == sha
    assert create_deferred(c, run, len(data) + 1).status_code == 409


def test_deferred_sha256_that_does_not_match_is_refused(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(3000)
    body = create_deferred(c, run, len(data)).json()
    parts = put_signed(c, body["id"], data, body["upload"]["part_size"], [1])
    wrong = hashlib.sha256(b"other").hexdigest()
    r = c.post(
        f"/api/v1/artifacts/{body['id']}/complete/",
        {"parts": parts, "sha256": wrong},
        format="json",
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "checksum_mismatch"
    art = Artifact.objects.get(pk=body["id"])
    assert art.state == ArtifactState.PENDING and art.blob_id is None and art.upload_id == ""
    assert bucket_keys() == []
    # The upload is forgotten: no part URL until the artifact is created again.
    r = sign(c, body["id"], [{"number": 1, "crc32": "AAAAAA=="}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_upload"


def test_declared_sha256_cannot_change_at_complete(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(1000)
    body = create(c, run, data).json()
    parts = put_parts(body["upload"], data)
    r = c.post(
        f"/api/v1/artifacts/{body['id']}/complete/",
        {"parts": parts, "sha256": hashlib.sha256(b"x").hexdigest()},
        format="json",
    )
    assert r.status_code == 400 and r.json()["error"]["field"] == "sha256"
    # The same sha256 again is fine.
    r = c.post(
        f"/api/v1/artifacts/{body['id']}/complete/",
        {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()},
        format="json",
    )
    assert r.status_code == 200 and r.json()["state"] == "ready"


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ("1", "parts"),
        ([], "parts"),
        ([{"number": 0, "crc32": "AAAAAA=="}], "parts[0]"),
        ([{"number": 3, "crc32": "AAAAAA=="}], "parts[0]"),
        ([{"number": "1", "crc32": "AAAAAA=="}], "parts[0]"),
        ([{"number": 1}], "parts[0].crc32"),
        ([{"number": 1, "crc32": "not-b64!"}], "parts[0].crc32"),
        ([{"number": 1, "crc32": "AAAAAA=="}, {"number": 2, "crc32": 5}], "parts[1].crc32"),
    ],
)
def test_bad_part_signing_requests(api, tenants, run, parts, field):
    c = api(tenants.bob)
    body = create_deferred(c, run, 9 * MB).json()
    r = sign(c, body["id"], parts)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert Artifact.objects.get(pk=body["id"]).metadata["part_crc32"] == [None, None]


def test_deferred_upload_edge_cases(api, tenants, run):
    c = api(tenants.bob)
    # Part checksums are given per part in this mode, never up front.
    r = c.post(
        f"/api/v1/runs/{run.pk}/artifacts/",
        {"path": "x", "size": 10, "part_checksums": {"algorithm": "crc32", "part_size": 8 * MB,
                                                     "values": ["AAAAAA=="]}},
        format="json",
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["field"] == "part_checksums"
    # An empty file needs no hash from the client.
    r = create_deferred(c, run, 0, path="empty.bin")
    assert r.status_code == 201 and r.json()["state"] == "ready"
    assert r.json()["sha256"] == hashlib.sha256(b"").hexdigest()
    # Completing with a part that was never signed (no CRC32 recorded) is refused.
    data = os.urandom(9 * MB)
    body = create_deferred(c, run, len(data)).json()
    parts = put_signed(c, body["id"], data, body["upload"]["part_size"], [1])
    parts.append({"number": 2, "etag": '"abc"'})
    r = c.post(
        f"/api/v1/artifacts/{body['id']}/complete/",
        {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()},
        format="json",
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "upload_incomplete"
    assert "Part 2" in r.json()["error"]["message"]
    # A finished artifact has no parts left to sign.
    done = create_deferred(c, run, 0, path="empty.bin").json()
    r = sign(c, done["id"], [{"number": 1, "crc32": "AAAAAA=="}])
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_pending"
    # A viewer cannot sign parts.
    r = sign(api(tenants.carol), body["id"], [{"number": 1, "crc32": "AAAAAA=="}])
    assert r.status_code == 403


def test_pending_deferred_upload_is_resumed(api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(9 * MB)
    first = create_deferred(c, run, len(data)).json()
    size = first["upload"]["part_size"]
    (p1,) = put_signed(c, first["id"], data, size, [1])
    # The client crashed after part 1; the same file (same size) again resumes that upload.
    again = create_deferred(c, run, len(data)).json()
    assert again["id"] == first["id"]
    assert again["upload"]["upload_id"] == first["upload"]["upload_id"]
    (p2,) = put_signed(c, first["id"], data, size, [2])
    r = c.post(
        f"/api/v1/artifacts/{first['id']}/complete/",
        {"parts": [p1, p2], "sha256": hashlib.sha256(data).hexdigest()},
        format="json",
    )
    assert r.json()["state"] == "ready"
    # A declared upload under a pending deferred path restarts it (and the other way round).
    body = create_deferred(c, run, 10, path="y.bin").json()
    declared = create(c, run, os.urandom(10), path="y.bin").json()
    assert declared["id"] == body["id"]
    assert declared["upload"]["upload_id"] != body["upload"]["upload_id"]
    assert len(declared["upload"]["parts"]) == 1


def test_deferred_chunked_upload(local_storage, api, tenants, run):
    c = api(tenants.bob)
    data = os.urandom(5000)
    body = create_deferred(c, run, len(data)).json()
    assert body["upload"] == {"mode": "chunked", "chunk_size": 8 * MB, "offset": 0}
    assert put_chunk(c, body["id"], 0, data).json() == {"offset": len(data)}
    sha = hashlib.sha256(data).hexdigest()
    r = c.post(f"/api/v1/artifacts/{body['id']}/complete/", {"sha256": sha}, format="json")
    assert r.status_code == 200 and r.json()["state"] == "ready"
    assert Artifact.objects.get(pk=body["id"]).blob_id == sha

"""Artifact and upload paths: '..' in every encoding is refused with a 4xx and nothing stored;
storage keys never come from user input."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any
from urllib.parse import quote

import pytest

from tracker.ingest.archive import normalize_member_path
from tracker.models import Artifact, IngestJob, UploadChunk, UploadFile
from tracker.storage import check_sha256, get_blob_store

pytestmark = pytest.mark.django_db

EVIL_PATHS = [
    "../x.pt",
    "a/../../x.pt",
    "..",
    "%2e%2e/x.pt",
    "%2E%2E/x.pt",
    "..%2fx.pt",
    "..%2Fx.pt",
    "a/..%2f..%2fx.pt",
    "%252e%252e/x.pt",  # double-encoded
    "%2e%2e%5cx.pt",
    "..\\x.pt",
    "a\\..\\..\\x.pt",
    "/etc/passwd",
    "\\\\server\\share\\x.pt",
    "C:\\Windows\\x.pt",
    "C:/x.pt",
    "x\x00.pt",
    "x%00.pt",
    "a/\x00/../x",
    "\u2024\u2024/x.pt",  # ONE DOT LEADER ×2: NFKC folds it to '..'
    "\u2025/x.pt",  # TWO DOT LEADER
    "\uff0e\uff0e/x.pt",  # FULLWIDTH FULL STOP
    "..\uff0fx.pt",  # FULLWIDTH SOLIDUS
    "a\uff0f..\uff0fx.pt",
    "..\u2215x.pt",  # DIVISION SLASH
    "..\u2044x.pt",  # FRACTION SLASH
    "..\uff3cx.pt",  # FULLWIDTH REVERSE SOLIDUS
    "",
    "   ",
    "./.",
]

DATA = b"model weights"
SHA = hashlib.sha256(DATA).hexdigest()


def s3_state() -> tuple[list[str], list[str]]:
    store = get_blob_store()
    objs = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    mpu = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return (
        sorted(o["Key"] for o in objs.get("Contents", [])),
        sorted(u["Key"] for u in mpu.get("Uploads", [])),
    )


@pytest.fixture
def run(tenants: Any) -> Any:
    from tests.factories import RunFactory

    return RunFactory(project=tenants.vision, created_by=tenants.bob)


@pytest.mark.parametrize("path", EVIL_PATHS, ids=[repr(p) for p in EVIL_PATHS])
def test_artifact_create_refuses_traversal(api: Any, tenants: Any, run: Any, path: str) -> None:
    before = s3_state()
    r = api(tenants.bob).post(
        f"/api/v1/runs/{run.pk}/artifacts/",
        {"path": path, "size": len(DATA), "sha256": SHA},
        format="json",
    )
    assert r.status_code == 400, (path, r.content)
    assert r.json()["error"]["field"] == "path"
    assert not Artifact.objects.exists()
    assert s3_state() == before  # no multipart upload started, no object written


# As a directory in front of a file name, blank and "." segments are harmless (dropped).
UPLOAD_EVIL = [p for p in EVIL_PATHS if p.strip() and p != "./."]


@pytest.mark.parametrize("path", UPLOAD_EVIL, ids=[repr(p) for p in UPLOAD_EVIL])
def test_upload_create_refuses_traversal(api: Any, tenants: Any, path: str) -> None:
    r = api(tenants.bob).post(
        "/api/v1/projects/acme/vision/uploads/",
        {"files": [{"path": f"{path}/events.out.tfevents.1.h", "size": 4}]},
        format="json",
    )
    assert r.status_code == 400, (path, r.content)
    assert not IngestJob.objects.exists() and not UploadFile.objects.exists()


def test_upload_content_path_must_be_a_declared_file(api: Any, tenants: Any) -> None:
    bob = api(tenants.bob)
    r = bob.post(
        "/api/v1/projects/acme/vision/uploads/",
        {"files": [{"path": "run/events.out.tfevents.1.h", "size": 4}]},
        format="json",
    )
    assert r.status_code == 201
    job = r.json()["id"]
    for path in ["../run/events.out.tfevents.1.h", "run/%2e%2e/x", "run\uff0f..\uff0fx", "/etc/x"]:
        r = bob.generic(
            "PUT",
            f"/api/v1/uploads/{job}/files/content?path={quote(path)}&offset=0",
            b"abcd",
            content_type="application/octet-stream",
        )
        assert 400 <= r.status_code < 500, (path, r.status_code)
    assert not UploadChunk.objects.exists()


@pytest.mark.parametrize(
    "name",
    [
        "%2e%2e/evil.tfevents",
        "\u2024\u2024/evil.tfevents",
        "..\uff0fevil.tfevents",
        "a/..%2f..%2fx",
    ],
)
def test_archive_members_in_disguise_are_refused(name: str) -> None:
    path, problem = normalize_member_path(name)
    assert path is None and problem is not None and problem.kind == "path_traversal"


def test_archive_with_disguised_members_stores_none_of_them(api: Any, tenants: Any) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("%2e%2e/evil/events.out.tfevents.1.x", b"x" * 50)
        zf.writestr("\u2024\u2024/evil/events.out.tfevents.2.x", b"x" * 50)
    from django.core.files.uploadedfile import SimpleUploadedFile

    r = api(tenants.bob).post(
        "/api/v1/projects/acme/vision/uploads/archive",
        {"file": SimpleUploadedFile("logs.zip", buf.getvalue())},
    )
    assert r.status_code == 202, r.content
    job = api(tenants.bob).get(f"/api/v1/jobs/{r.json()['id']}/").json()
    assert sorted(p["kind"] for p in job["problems"]) == ["path_traversal", "path_traversal"]
    assert not UploadFile.objects.exists()


def test_storage_keys_never_come_from_user_input(api: Any, tenants: Any, run: Any) -> None:
    """A legal but odd artifact path is a label: the S3 keys are ids, uuids and digests."""
    bob = api(tenants.bob)
    label = "ckpt dir/..weird name..%41.pt"
    r = bob.post(
        f"/api/v1/runs/{run.pk}/artifacts/",
        {"path": label, "size": len(DATA), "sha256": SHA},
        format="json",
    )
    assert r.status_code == 201, r.content
    art = r.json()
    assert art["path"] == label
    objects, uploads = s3_state()
    prefix = get_blob_store().prefix
    assert all(k.startswith(f"{prefix}uploads/artifact-{art['id']}-") for k in uploads), uploads
    import requests

    part = art["upload"]["parts"][0]
    etag = requests.put(part["url"], data=DATA, timeout=30).headers["ETag"]
    r = bob.post(
        f"/api/v1/artifacts/{art['id']}/complete/",
        {"parts": [{"number": 1, "etag": etag}]},
        format="json",
    )
    assert r.status_code == 200 and r.json()["state"] == "ready", r.content
    objects, uploads = s3_state()
    assert objects == [f"{prefix}blobs/{SHA}"] and uploads == []
    # The blob store itself only takes hex digests as names.
    for bad in ["../x", "a" * 63, SHA.upper().replace("A", "G"), f"{SHA[:-1]}/"]:
        with pytest.raises(ValueError):
            check_sha256(bad)
    # The download names the file after the label's basename, quoted, never a path.
    r = bob.get(f"/api/v1/artifacts/{art['id']}/download")
    assert r.status_code in (200, 302)

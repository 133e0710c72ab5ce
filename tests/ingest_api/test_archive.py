"""Archive uploads (.tar, .tar.gz, .zip): imported like a logdir; attacks refused, no side effect."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.ingest_api.helpers import (
    PROJECT,
    logdir_files,
    same_points,
    stored_scalars,
    tb_scalars,
)
from tracker.ingest import archive as A
from tracker.models import Blob, IngestJob, Run, UploadChunk, UploadFile

URL = f"/api/v1/projects/{PROJECT}/uploads/archive"


def make_tar(
    root: Path, extra: list[tuple[tarfile.TarInfo, bytes]] | None = None, gz: bool = True
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for rel in logdir_files(root):
            tar.add(root / rel, arcname=rel)
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def make_zip(root: Path | None, extra: list[tuple[zipfile.ZipInfo, bytes]] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if root is not None:
            for rel in logdir_files(root):
                zf.write(root / rel, arcname=rel)
        for info, data in extra or []:
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def post_archive(client, data: bytes, name: str = "logs.tar.gz"):  # type: ignore[no-untyped-def]
    f = io.BytesIO(data)
    f.name = name
    return client.post(URL, {"file": f}, format="multipart")


def _info(
    name: str, kind: bytes, data: bytes = b"", linkname: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.linkname = linkname
    return info, data


def _check_torch_import(tenants, logdir: Path) -> None:  # type: ignore[no-untyped-def]
    run = Run.objects.get(project=tenants.vision, source_path="torch_run")
    ours = stored_scalars(run)
    theirs = tb_scalars(logdir / "torch_run")
    for key, pts in theirs.items():
        same_points(ours[key], pts)


@pytest.mark.parametrize("kind", ["tar.gz", "tar", "zip"])
def test_archive_imports_like_a_logdir(tenants, api, torch_logdir, kind):
    data = make_zip(torch_logdir) if kind == "zip" else make_tar(torch_logdir, gz=kind == "tar.gz")
    r = post_archive(api(tenants.bob), data, f"logs.{kind}")
    assert r.status_code == 202, r.content
    job = api(tenants.carol).get(f"/api/v1/jobs/{r.json()['id']}/").json()
    assert job["kind"] == "archive" and job["state"] == "succeeded", job
    assert job["problems"] == []
    assert sorted(f["path"] for f in job["files"]) == logdir_files(torch_logdir)
    assert all(f["bytes_parsed"] == f["bytes_received"] for f in job["files"])
    _check_torch_import(tenants, torch_logdir)
    # The same archive again changes nothing.
    points = job["summary"]["points"]
    r = post_archive(api(tenants.bob), data, f"logs.{kind}")
    again = api(tenants.bob).get(f"/api/v1/jobs/{r.json()['id']}/").json()
    assert again["state"] == "succeeded" and again["summary"]["points"] == points
    assert Run.objects.filter(project=tenants.vision).count() == 1


def test_bad_members_are_refused_and_reported_the_rest_imported(tenants, api, torch_logdir):
    evil = b"\x00" * 64
    extra = [
        _info("../escape/events.out.tfevents.1.x", tarfile.REGTYPE, evil),
        _info("/etc/events.out.tfevents.1.x", tarfile.REGTYPE, evil),
        _info("r/link.tfevents", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _info("r/hard.tfevents", tarfile.LNKTYPE, linkname="torch_run/x"),
        _info("r/dev.tfevents", tarfile.CHRTYPE),
        _info("r/fifo.tfevents", tarfile.FIFOTYPE),
    ]
    r = post_archive(api(tenants.bob), make_tar(torch_logdir, extra))
    assert r.status_code == 202, r.content
    job = api(tenants.bob).get(f"/api/v1/jobs/{r.json()['id']}/").json()
    assert job["state"] == "succeeded"
    kinds = sorted((p["file"], p["kind"]) for p in job["problems"])
    assert kinds == sorted(
        [
            ("../escape/events.out.tfevents.1.x", "path_traversal"),
            ("/etc/events.out.tfevents.1.x", "absolute_path"),
            ("r/link.tfevents", "symlink"),
            ("r/hard.tfevents", "hardlink"),
            ("r/dev.tfevents", "device"),
            ("r/fifo.tfevents", "device"),
        ]
    )
    assert all(p["message"] for p in job["problems"])
    # Nothing of them stored anywhere; the good members imported.
    assert sorted(UploadFile.objects.values_list("relative_path", flat=True)) == logdir_files(
        torch_logdir
    )
    assert not Run.objects.filter(source_path__in=["r", "escape", "etc", ".."]).exists()
    _check_torch_import(tenants, torch_logdir)


def test_zip_slip_symlink_and_absolute_members(tenants, api, torch_logdir):
    link = zipfile.ZipInfo("r/link.tfevents")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    dev = zipfile.ZipInfo("r/dev.tfevents")
    dev.create_system = 3
    dev.external_attr = (stat.S_IFCHR | 0o600) << 16
    extra = [
        (zipfile.ZipInfo("../../evil/events.out.tfevents.1.x"), b"x" * 50),
        (zipfile.ZipInfo("..\\..\\evil\\events.out.tfevents.2.x"), b"x" * 50),
        (zipfile.ZipInfo("/abs/events.out.tfevents.3.x"), b"x" * 50),
        (zipfile.ZipInfo("C:/win/events.out.tfevents.4.x"), b"x" * 50),
        (link, b"/etc/passwd"),
        (dev, b""),
    ]
    r = post_archive(api(tenants.bob), make_zip(torch_logdir, extra), "logs.zip")
    assert r.status_code == 202, r.content
    job = api(tenants.bob).get(f"/api/v1/jobs/{r.json()['id']}/").json()
    kinds = sorted(p["kind"] for p in job["problems"])
    assert kinds == sorted(
        ["path_traversal", "path_traversal", "absolute_path", "absolute_path", "symlink", "device"]
    )
    assert sorted(UploadFile.objects.values_list("relative_path", flat=True)) == logdir_files(
        torch_logdir
    )


def _nothing_stored() -> None:
    assert IngestJob.objects.count() == 0
    assert UploadFile.objects.count() == 0
    assert UploadChunk.objects.count() == 0
    assert Blob.objects.count() == 0
    assert Run.objects.count() == 0


def test_zip_bomb_is_refused_with_no_side_effect(tenants, api, settings):
    settings.TRACKER_ARCHIVE_RATIO_FLOOR = 1 << 20
    bomb = make_zip(None, [(zipfile.ZipInfo("r/events.out.tfevents.1.x"), b"\0" * (30 << 20))])
    assert len(bomb) < 100_000
    r = post_archive(api(tenants.bob), bomb, "bomb.zip")
    assert r.status_code == 400, r.content
    err = r.json()["error"]
    assert err["code"] == "archive_bomb" and "bomb" in err["message"] and err["field"] == "file"
    _nothing_stored()


def test_tar_gz_bomb_is_refused_with_no_side_effect(tenants, api, settings):
    settings.TRACKER_ARCHIVE_RATIO_FLOOR = 1 << 20
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        info = tarfile.TarInfo("r/events.out.tfevents.1.x")
        info.size = 40 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    bomb = gzip.compress(inner.getvalue(), 9)
    r = post_archive(api(tenants.bob), bomb)
    assert r.status_code == 400 and r.json()["error"]["code"] == "archive_bomb"
    _nothing_stored()


def test_total_size_and_member_count_limits(tenants, api, settings, tmp_path):
    settings.TRACKER_ARCHIVE_MAX_MEMBERS = 5
    many = make_zip(
        None, [(zipfile.ZipInfo(f"r{i}/events.out.tfevents.{i}"), b"x") for i in range(6)]
    )
    r = post_archive(api(tenants.bob), many, "many.zip")
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_members"
    many_tar = make_tar(tmp_path, [_info(f"r{i}/f", tarfile.REGTYPE, b"x") for i in range(6)])
    r = post_archive(api(tenants.bob), many_tar)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_members"
    settings.TRACKER_ARCHIVE_MAX_MEMBERS = 100
    settings.TRACKER_ARCHIVE_MAX_BYTES = 1000
    big = make_tar(tmp_path, [_info("r/events.out.tfevents.1", tarfile.REGTYPE, b"y" * 2000)])
    r = post_archive(api(tenants.bob), big)
    assert r.status_code == 400 and r.json()["error"]["code"] == "archive_too_large"
    _nothing_stored()


def test_not_an_archive_and_damaged_archives(tenants, api, torch_logdir):
    client = api(tenants.bob)
    r = post_archive(client, b"hello, I am plain text" * 50, "x.zip")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_archive"
    good = make_tar(torch_logdir)
    r = post_archive(client, good[: len(good) // 2])
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_archive"
    assert client.post(URL, {}, format="multipart").status_code == 400
    _nothing_stored()


def test_archive_authorization(tenants, api, torch_logdir):
    data = make_tar(torch_logdir)
    assert post_archive(api(tenants.carol), data).status_code == 403
    assert post_archive(api(tenants.mallory), data).status_code == 404
    _nothing_stored()


# --- the pure reader, directly ------------------------------------------------------------------------


def test_member_paths_are_normalized_or_refused():
    ok = A.normalize_member_path
    assert ok("./a/b/../c")[1].kind == "path_traversal"  # type: ignore[union-attr]
    assert ok("a//./b")[0] == "a/b"
    assert ok("a\\b")[0] == "a/b"
    assert ok("\\\\server\\share\\x")[1].kind == "absolute_path"  # type: ignore[union-attr]
    assert ok("a/\x01b")[1].kind == "unsafe_path"  # type: ignore[union-attr]
    assert ok("./")[1].kind == "unsafe_path"  # type: ignore[union-attr]


def test_lying_tar_header_cannot_exceed_budget():
    """Bytes actually produced are counted, not sizes the archive declares."""
    limits = A.ArchiveLimits(max_total_bytes=10_000, ratio_floor=1 << 30)
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(5):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 4000
            tar.addfile(info, io.BytesIO(b"z" * 4000))
    with pytest.raises(A.ArchiveRejected) as exc:
        A.scan(io.BytesIO(gzip.compress(inner.getvalue())), "tar.gz", limits)
    assert exc.value.code == "archive_too_large"

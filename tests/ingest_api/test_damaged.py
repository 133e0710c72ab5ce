"""Damaged tfevents files: every good record kept, every bad one reported with file and offset."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.ingest_api.helpers import stored_scalars, upload_logdir
from tracker.ingest.tfevents import masked_crc32c
from tracker.models import IngestJob, Run, UploadFile

N = 20  # scalar events per file (plus the leading file_version record)


def _records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record of an intact file."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + length + 16))
        pos += length + 16
    return out


@pytest.fixture
def clean_file(tmp_path: Path) -> bytes:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "src"))
    for s in range(N):
        w.add_scalar("loss", float(s), s)
    w.close()
    (f,) = (tmp_path / "src").iterdir()
    data = f.read_bytes()
    assert len(_records(data)) == N + 1
    return data


def _corrupt(data: bytes, how: str) -> tuple[bytes, list[tuple[str, int]], list[int]]:
    """Damaged bytes, the expected (kind, offset) problems and the steps that survive."""
    recs = _records(data)
    steps = list(range(N))
    k = 6  # record k holds step k - 1
    start, end = recs[k]
    b = bytearray(data)
    if how == "bad_payload_crc":
        b[start + 14] ^= 0x55
        return bytes(b), [("bad_payload_crc", start)], [s for s in steps if s != k - 1]
    if how == "bad_length_crc":
        b[start + 9] ^= 0x55
        return bytes(b), [("bad_length_crc", start)], [s for s in steps if s != k - 1]
    if how == "length_too_large":
        header = struct.pack("<Q", 1 << 40)
        b[start : start + 12] = header + struct.pack("<I", masked_crc32c(header))
        return bytes(b), [("length_too_large", start)], [s for s in steps if s != k - 1]
    if how == "garbage":
        junk = bytes(range(7, 250))  # no valid header in there
        return data[:end] + junk + data[end:], [("bad_length_crc", end)], steps
    if how == "truncated_tail":
        last_start, last_end = recs[-1]
        cut = last_start + (last_end - last_start) // 2
        return data[:cut], [("truncated", last_start)], steps[:-1]
    if how == "not_tfevents":
        return b"this is a README, not an event file\n" * 40, [("not_tfevents", 0)], []
    raise AssertionError(how)


KINDS = [
    "bad_payload_crc",
    "bad_length_crc",
    "length_too_large",
    "garbage",
    "truncated_tail",
    "not_tfevents",
]


def test_damaged_files_exact_problems_and_kept_records(tenants, api, tmp_path, clean_file):
    root = tmp_path / "logs"
    expected = {}
    for how in KINDS:
        damaged, problems, steps = _corrupt(clean_file, how)
        path = root / how / "events.out.tfevents.1700000000.host"
        path.parent.mkdir(parents=True)
        path.write_bytes(damaged)
        expected[how] = (problems, steps)

    job = upload_logdir(api(tenants.bob), root, chunk=97)  # chunks split records everywhere
    assert job["state"] == "succeeded", job  # damage is never fatal
    by_file: dict[str, list] = {}
    for p in job["problems"]:
        by_file.setdefault(p["file"].split("/")[0], []).append((p["kind"], p["offset"]))
        assert p["message"]
    for how in KINDS:
        problems, steps = expected[how]
        assert by_file.get(how, []) == problems, how
        run = Run.objects.get(project=tenants.vision, source_path=how)
        points = stored_scalars(run).get("loss", [])
        assert [p[0] for p in points] == steps, how
        assert all(v == float(s) for s, _, v in points)
    assert job["summary"]["points"] == sum(len(s) for _, s in expected.values())
    assert job["summary"]["skipped_records"] == len(KINDS)
    # The row carries the same list for readers of the model (the web UI's upload log).
    assert IngestJob.objects.get(pk=job["id"]).problems == job["problems"]

    # Re-running the import reports nothing twice and changes nothing.
    job2 = upload_logdir(api(tenants.bob), root)
    assert sorted(map(str, job2["problems"])) == sorted(map(str, job["problems"]))
    assert job2["summary"] == job["summary"]


def test_truncated_tail_completes_when_the_rest_arrives(tenants, api, tmp_path, clean_file):
    root = tmp_path / "logs"
    path = root / "r" / "events.out.tfevents.1700000000.host"
    path.parent.mkdir(parents=True)
    damaged, _, steps = _corrupt(clean_file, "truncated_tail")
    path.write_bytes(damaged)
    client = api(tenants.bob)
    job = upload_logdir(client, root)
    assert [p["kind"] for p in job["problems"]] == ["truncated"]
    path.write_bytes(clean_file)  # the writer finished the record
    job = upload_logdir(client, root)
    assert job["problems"] == []
    points = stored_scalars(Run.objects.get(project=tenants.vision))["loss"]
    assert [p[0] for p in points] == list(range(N))
    f = UploadFile.objects.get()
    assert f.bytes_parsed == f.bytes_received == len(clean_file)

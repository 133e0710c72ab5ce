import base64
import hashlib
import os
import threading
import zlib
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import run_created
from tracker_client import Run
from tracker_client.artifacts import (
    ArtifactError,
    FileDigest,
    digest_file,
    download_artifact,
    file_signature,
    normalize_remote_path,
    part_size_for,
    plan_artifact,
    upload_file,
)
from tracker_client.http import ApiError, HttpClient


def test_plan_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch10.pt").write_bytes(b"x")
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "a.txt").write_text("a")
    (tmp_path / "out" / "sub" / "b.txt").write_text("b")
    assert plan_artifact("checkpoints/epoch10.pt")[0][1] == "checkpoints/epoch10.pt"
    assert plan_artifact(tmp_path / "checkpoints" / "epoch10.pt")[0][1] == "epoch10.pt"
    assert plan_artifact("checkpoints/epoch10.pt", name="best.pt")[0][1] == "best.pt"
    assert [r for _, r in plan_artifact("out")] == ["out/a.txt", "out/sub/b.txt"]
    assert [r for _, r in plan_artifact("out", name="results")] == [
        "results/a.txt",
        "results/sub/b.txt",
    ]
    with pytest.raises(FileNotFoundError):
        plan_artifact("nope.bin")


@pytest.mark.parametrize("bad", ["", "/", "../x", "a/../../b", "./.."])
def test_remote_path_rejects_traversal(bad):
    with pytest.raises(ValueError):
        normalize_remote_path(bad)


def test_remote_path_normalizes():
    assert normalize_remote_path("/a//b/./c\\d") == "a/b/c/d"


def test_sha256_streaming(tmp_path):
    data = os.urandom(9 * 1024 * 1024 + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    digest = digest_file(path)
    assert (digest.sha256, digest.size) == (hashlib.sha256(data).hexdigest(), len(data))


class ObjectStore:
    """Stub for both the API and presigned part URLs; records what it received."""

    def __init__(
        self, mode, part_size=1000, fail_parts=(), lose_chunk_response_at=None, bad_digests=None
    ):
        self.mode = mode
        self.part_size = part_size
        self.fail_parts = set(fail_parts)
        self.bad_digests = dict(bad_digests or {})  # part number -> BadDigest answers to give
        self.part_headers: dict[int, str | None] = {}
        self.lose_chunk_response_at = lose_chunk_response_at
        self.parts: dict[int, bytes] = {}
        self.part_puts: Counter = Counter()
        self.chunked = bytearray()
        self.declared: dict = {}
        self.completed = None
        self.auth_on_presigned = []
        self.url = ""
        self.upload_id = "up-1"
        self.lock = threading.Lock()
        self.signed: list[dict] = []  # what .../parts/ was asked for (sha256 at complete)
        self.existing: dict | None = None  # an artifact already ready under the path

    def part_url(self, number):
        return f"{self.url}/s3/part{number}?uploadId={self.upload_id}&X-Sig=abc"

    def __call__(self, req):
        split = urlsplit(req.path)
        path, query = split.path, parse_qs(split.query)
        if path.startswith("/s3/part"):
            number = int(path.removeprefix("/s3/part"))
            with self.lock:
                self.part_puts[number] += 1
                self.auth_on_presigned.append(req.headers.get("authorization"))
                if number in self.fail_parts:
                    return 403, {"Content-Type": "application/xml"}, b"<Error>denied</Error>"
                self.part_headers[number] = req.headers.get("x-amz-checksum-crc32")
                if self.bad_digests.get(number):
                    self.bad_digests[number] -= 1
                    body = b"<Error><Code>BadDigest</Code></Error>"
                    return 400, {"Content-Type": "application/xml"}, body
                self.parts[number] = req.body
            return 200, {"ETag": f'"etag-{number}"'}, b""
        if path == "/api/v1/runs/7/artifacts/" and req.method == "POST":
            self.declared = req.json()
            size = self.declared["size"]
            if self.existing is not None:
                return 201, {}, {**self.existing, "upload": None}
            if "sha256" not in self.declared and self.mode == "s3":
                upload = {"mode": "s3-multipart", "part_size": self.part_size, "parts": [],
                          "checksum": "crc32", "upload_id": self.upload_id}  # fmt: skip
                return 201, {}, {"id": 11, "path": self.declared["path"], "state": "pending",
                                 "sha256": "", "upload": upload}  # fmt: skip
            if self.mode == "chunked":
                upload = {"mode": "chunked", "chunk_size": 1000, "offset": len(self.chunked)}
            else:
                n = (size + self.part_size - 1) // self.part_size
                upload = {
                    "mode": "s3-multipart",
                    "part_size": self.part_size,
                    "parts": [
                        {
                            "number": i,
                            "url": self.part_url(i),
                        }
                        for i in range(1, n + 1)
                    ],
                }
                crcs = (self.declared.get("part_checksums") or {}).get("values")
                if crcs and len(crcs) == n:  # as a server would sign them into the URLs
                    for part, crc in zip(upload["parts"], crcs, strict=True):
                        part["headers"] = {"x-amz-checksum-crc32": crc}
            return (
                201,
                {},
                {"id": 11, "path": self.declared["path"], "state": "pending", "upload": upload},
            )
        if path == "/api/v1/artifacts/11/parts/":
            wanted = req.json()["parts"]
            with self.lock:
                self.signed.extend(wanted)
            signed = [
                {"number": p["number"], "url": self.part_url(p["number"]),
                 "headers": {"x-amz-checksum-crc32": p["crc32"]}}
                for p in wanted
            ]  # fmt: skip
            return 200, {}, {"parts": signed}
        if path == "/api/v1/artifacts/11/content":
            offset = int(query["offset"][0])
            if offset != len(self.chunked):
                return (
                    409,
                    {},
                    {
                        "error": {
                            "code": "offset_mismatch",
                            "message": "bad offset",
                            "expected_offset": len(self.chunked),
                        }
                    },
                )
            self.chunked.extend(req.body)
            if self.lose_chunk_response_at == offset:
                self.lose_chunk_response_at = None
                return 502, {}, {}  # stored, but the answer is lost on the way
            return 200, {}, {"offset": len(self.chunked)}
        if path == "/api/v1/artifacts/11/complete/":
            self.completed = req.json()
            if self.mode == "chunked":
                data = bytes(self.chunked)
            else:
                data = b"".join(self.parts[p["number"]] for p in self.completed["parts"])
            declared = self.declared.get("sha256") or self.completed.get("sha256")
            if hashlib.sha256(data).hexdigest() != declared:
                return 400, {}, {"error": {"code": "checksum_mismatch", "message": "bad sum"}}
            return 200, {}, {"id": 11, "path": self.declared["path"], "state": "ready"}
        return 404, {}, {"error": {"code": "not_found", "message": path}}


def _crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _serve_with_file(stub_server, tmp_path, store, size, name="model.bin"):
    """`store` behind a stub server, and a file of `size` random bytes: (stub, path, data)."""
    stub = stub_server(store)
    store.url = stub.url
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return stub, path, data


def _first_attempt_fails_at_part_3(stub_server, tmp_path, stream=False):
    """A 4,500-byte file in 5 parts; the object store refuses part 3 (403) the first time.
    `stream`: hashed while sent (sha256 at complete) rather than declared up front."""
    store = ObjectStore("s3", part_size=1000, fail_parts={3})
    stub, path, data = _serve_with_file(stub_server, tmp_path, store, 4500)
    http = HttpClient(stub.url, "secret-token")
    with pytest.raises(ApiError):
        upload_file(http, 7, path, "model.bin", workers=3, stream=stream)
    return store, http, path, data


def test_s3_multipart_parallel_and_resumable(stub_server, tmp_path):
    store, http, path, data = _first_attempt_fails_at_part_3(stub_server, tmp_path)
    assert store.completed is None
    first_puts = dict(store.part_puts)
    acked_first = set(store.parts)  # parts the object store accepted in the first attempt
    assert first_puts[3] == 1 and 3 not in acked_first  # 403 is permanent: not retried

    store.fail_parts.clear()
    result = upload_file(http, 7, path, "model.bin", workers=3)
    assert result["state"] == "ready"
    resent = {n: store.part_puts[n] - first_puts.get(n, 0) for n in range(1, 6)}
    # the state file remembered the ETags: only what was not acknowledged goes out again
    assert resent == {n: 0 if n in acked_first else 1 for n in range(1, 6)}
    assert store.completed == {"parts": [{"number": n, "etag": f'"etag-{n}"'} for n in range(1, 6)]}
    assert set(store.auth_on_presigned) == {None}  # the token never goes to the object store
    assert store.parts[5] == data[4000:]


def test_restarted_upload_forgets_the_etags_of_the_old_one(stub_server, tmp_path):
    store, http, path, data = _first_attempt_fails_at_part_3(stub_server, tmp_path)
    assert store.parts  # some parts of upload up-1 were acknowledged

    # The server aborted that upload (stale-upload cleanup) and hands out a new one.
    store.fail_parts.clear()
    store.parts.clear()
    store.upload_id = "up-2"
    before = dict(store.part_puts)
    result = upload_file(http, 7, path, "model.bin", workers=3)
    assert result["state"] == "ready"
    assert {n: store.part_puts[n] - before.get(n, 0) for n in range(1, 6)} == dict.fromkeys(
        range(1, 6), 1
    )
    assert b"".join(store.parts[n] for n in range(1, 6)) == data


def test_digest_file_crc32_per_part(tmp_path):
    data = os.urandom(17 * 1024 * 1024 + 5)  # 8 MiB + 8 MiB + the rest
    path = tmp_path / "f"
    path.write_bytes(data)
    digest = digest_file(path)
    assert (digest.sha256, digest.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert digest.part_size == 8 * 1024 * 1024 == part_size_for(len(data))
    p = digest.part_size
    assert digest.part_crc32 == tuple(
        base64.b64encode(zlib.crc32(data[i : i + p]).to_bytes(4, "big")).decode()
        for i in range(0, len(data), p)
    )
    assert digest.signature == file_signature(path)
    assert part_size_for(80 * 1024**3) == 9 * 1024 * 1024  # 10,000 parts must cover the file
    empty = tmp_path / "empty"
    empty.touch()
    assert digest_file(empty).part_crc32 == () and digest_file(empty).part_checksums() is None


def test_parts_carry_their_crc32_and_a_bad_digest_is_sent_again(stub_server, tmp_path):
    store = ObjectStore("s3", part_size=1000, bad_digests={2: 1, 3: 9})
    stub, path, data = _serve_with_file(stub_server, tmp_path, store, 3500)
    digest = FileDigest(
        hashlib.sha256(data).hexdigest(),
        len(data),
        file_signature(path),
        1000,
        tuple(_crc(data[i : i + 1000]) for i in range(0, len(data), 1000)),
    )
    http = HttpClient(stub.url, "t")
    # Part 3 never gets through (as if the file no longer matched its CRC32): given up on.
    with pytest.raises(ArtifactError, match="keeps receiving other bytes"):
        upload_file(http, 7, path, "model.bin", digest=digest, workers=1)
    assert store.part_puts[3] == 3 and store.completed is None
    assert store.declared["part_checksums"]["values"] == list(digest.part_crc32)
    store.bad_digests.clear()
    result = upload_file(http, 7, path, "model.bin", digest=digest, workers=1)
    assert result["state"] == "ready"
    assert store.part_puts[2] == 2  # damaged once on the way: sent again, once
    assert store.part_headers == {n: digest.part_crc32[n - 1] for n in range(1, 5)}


def test_chunked_upload_recovers_from_lost_response(stub_server, tmp_path):
    store = ObjectStore("chunked", lose_chunk_response_at=1000)
    stub, path, data = _serve_with_file(stub_server, tmp_path, store, 3500, "log.txt")
    result = upload_file(HttpClient(stub.url, "t"), 7, path, "logs/log.txt")
    assert result["state"] == "ready"
    assert bytes(store.chunked) == data  # the 409 answer moved us on instead of duplicating
    assert store.declared["path"] == "logs/log.txt"


def test_streaming_upload_hashes_while_sending_and_resumes(stub_server, tmp_path):
    store, http, path, data = _first_attempt_fails_at_part_3(stub_server, tmp_path, stream=True)
    assert "sha256" not in store.declared and store.completed is None
    acked_first = set(store.parts)
    first_puts = dict(store.part_puts)
    store.fail_parts.clear()
    progress: list[int] = []
    result = upload_file(http, 7, path, "model.bin", workers=3, stream=True,
                         progress=progress.append)  # fmt: skip
    assert result["state"] == "ready"
    # Only what the object store had not acknowledged goes out again...
    resent = {n: store.part_puts[n] - first_puts.get(n, 0) for n in range(1, 6)}
    assert resent == {n: 0 if n in acked_first else 1 for n in range(1, 6)}
    # ...each part signed with its CRC32 and sent with it; the sha256 declared at complete.
    assert store.part_headers == {n: _crc(data[(n - 1) * 1000 : n * 1000]) for n in range(1, 6)}
    assert all(p["crc32"] == _crc(data[(p["number"] - 1) * 1000 : p["number"] * 1000])
               for p in store.signed)  # fmt: skip
    assert store.completed == {
        "parts": [{"number": n, "etag": f'"etag-{n}"'} for n in range(1, 6)],
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert b"".join(store.parts[n] for n in range(1, 6)) == data
    assert sum(progress) == 2 * len(data)  # hashing + sending, skipped parts included
    assert set(store.auth_on_presigned) == {None}


def test_streaming_upload_of_a_file_changed_since_resends_every_part(stub_server, tmp_path):
    store, http, path, _ = _first_attempt_fails_at_part_3(stub_server, tmp_path, stream=True)
    assert store.parts
    data = os.urandom(4500)  # rewritten in between (same size): the old ETags name old bytes
    path.write_bytes(data)
    os.utime(path, ns=(1, 1))
    store.fail_parts.clear()
    before = dict(store.part_puts)
    assert upload_file(http, 7, path, "model.bin", workers=2, stream=True)["state"] == "ready"
    assert {n: store.part_puts[n] - before.get(n, 0) for n in range(1, 6)} == dict.fromkeys(
        range(1, 6), 1
    )
    assert store.completed["sha256"] == hashlib.sha256(data).hexdigest()


def test_streaming_upload_compares_with_an_artifact_already_there(stub_server, tmp_path):
    store = ObjectStore("s3", part_size=1000)
    stub, path, data = _serve_with_file(stub_server, tmp_path, store, 2500)
    http = HttpClient(stub.url, "t")
    sha = hashlib.sha256(data).hexdigest()
    store.existing = {"id": 11, "path": "model.bin", "state": "ready", "size": 2500, "sha256": sha}
    assert upload_file(http, 7, path, "model.bin", stream=True)["state"] == "ready"
    assert not store.part_puts and store.completed is None
    store.existing["sha256"] = "0" * 64
    with pytest.raises(ArtifactError, match="different content exists"):
        upload_file(http, 7, path, "model.bin", stream=True)


def test_streaming_upload_fails_on_a_file_that_shrinks(stub_server, tmp_path, monkeypatch):
    store = ObjectStore("s3", part_size=1000)
    stub, path, _ = _serve_with_file(stub_server, tmp_path, store, 3000)
    real = file_signature(path)
    # The size was taken (3,500 bytes) before the file was cut short.
    import tracker_client.artifacts as artifacts

    monkeypatch.setattr(artifacts, "file_signature", lambda p: (3500, *real[1:]))
    with pytest.raises(ArtifactError, match="shrank"):
        upload_file(HttpClient(stub.url, "t"), 7, path, "model.bin", workers=2, stream=True)
    assert store.completed is None


def test_streaming_chunked_upload_recovers_from_lost_response(stub_server, tmp_path):
    store = ObjectStore("chunked", lose_chunk_response_at=1000)
    stub, path, data = _serve_with_file(stub_server, tmp_path, store, 3500, "log.txt")
    result = upload_file(HttpClient(stub.url, "t"), 7, path, "logs/log.txt", stream=True)
    assert result["state"] == "ready"
    assert bytes(store.chunked) == data
    assert "sha256" not in store.declared
    assert store.completed == {"sha256": hashlib.sha256(data).hexdigest()}


def test_log_artifact_runs_in_background_and_finish_waits(stub_server, tmp_path):
    store = ObjectStore("chunked")

    def handler(req):
        if req.method == "POST" and req.path.endswith("/projects/ws/p/runs/"):
            return run_created(req)
        if "/artifacts" in req.path:
            return store(req)
        return 200, {}, {}

    stub = stub_server(handler)
    path = tmp_path / "weights.pt"
    data = os.urandom(5000)
    path.write_bytes(data)
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    assert run.log_artifact(path, name="ckpt/weights.pt") == ["ckpt/weights.pt"]
    run.finish()
    assert bytes(store.chunked) == data and store.completed == {}
    assert stub.requests[-1].method == "PATCH"  # status set after the upload finished


def test_artifact_under_a_path_with_other_content_fails_at_once(stub_server, tmp_path, caplog):
    """409 artifact_exists is final: no minute of retries, nothing parked for `tracker sync`."""
    creates = []

    def handler(req):
        if req.method == "POST" and req.path.endswith("/projects/ws/p/runs/"):
            return run_created(req)
        if req.path == "/api/v1/runs/7/artifacts/":
            creates.append(req.json())
            error = {"code": "artifact_exists", "message": "other content", "field": "path"}
            return 409, {}, {"error": error}
        return 200, {}, {}

    stub = stub_server(handler)
    small, big = tmp_path / "small.pt", tmp_path / "big.pt"
    small.write_bytes(b"x" * 100)
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # hashed while sent: no sha256 declared
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    run.log_artifact(small, name="a.pt")
    run.log_artifact(big, name="b.pt")
    run.finish()
    assert [c["path"] for c in creates] == ["a.pt", "b.pt"]  # one request each
    assert "sha256" in creates[0] and "sha256" not in creates[1]
    assert run._artifacts.failed == 2 and run._artifacts.journaled == 0
    assert "rejected by the server" in caplog.text


def test_download_streams_and_verifies(stub_server, tmp_path):
    data = os.urandom(3000)
    good = hashlib.sha256(data).hexdigest()
    state = {"sha": good, "urls": []}

    def handler(req):
        if req.path.startswith("/api/v1/runs/7/artifacts/"):
            return (
                200,
                {},
                {
                    "results": [
                        {
                            "id": 11,
                            "path": "ckpt/model.bin",
                            "size": len(data),
                            "sha256": state["sha"],
                        }
                    ],
                    "next": None,
                },
            )
        if req.path == "/api/v1/artifacts/11/download":
            return 302, {"Location": f"{stub.url}/blob?sig=1"}, b""
        if req.path.startswith("/blob"):
            state["urls"].append(req.headers.get("authorization"))
            return 200, {"Content-Type": "application/octet-stream"}, data
        return 404, {}, {}

    stub = stub_server(handler)
    http = HttpClient(stub.url, "t")
    out = download_artifact(http, 7, "ckpt/model.bin", tmp_path)
    assert out == tmp_path / "model.bin" and out.read_bytes() == data
    assert download_artifact(http, 7, "ckpt/model.bin", tmp_path / "dl") == (
        tmp_path / "dl" / "model.bin"
    )
    assert download_artifact(http, 7, "ckpt/model.bin", tmp_path / "x.bin") == tmp_path / "x.bin"
    assert state["urls"] == [None, None, None]  # never our token on the presigned URL
    state["sha"] = "0" * 64
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        download_artifact(http, 7, "ckpt/model.bin", tmp_path / "other.bin")
    assert not (tmp_path / "other.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    with pytest.raises(ArtifactError, match="no artifact"):
        download_artifact(http, 7, "missing.bin", tmp_path)

import json
import os
from urllib.parse import parse_qs, urlsplit

import pytest
from tracker_client.cli import main
from tracker_client.http import HttpClient
from tracker_client.upload import LogdirUploader, discover


@pytest.fixture
def logdir(tmp_path):
    root = tmp_path / "logs"
    (root / "run1" / "train").mkdir(parents=True)
    (root / "run1" / "events.out.tfevents.1.host").write_bytes(b"a" * 100)
    (root / "run1" / "train" / "events.out.tfevents.2.host.v2").write_bytes(b"b" * 50)
    (root / "run1" / "notes.txt").write_text("not uploaded")
    emb = root / "run1" / "00000" / "default"
    emb.mkdir(parents=True)
    (emb / "tensors.tsv").write_text("1\t2\n")
    (emb / "metadata.tsv").write_text("x\n")
    (emb / "sprite.png").write_bytes(b"\x89PNG")
    (root / "run1" / "projector_config.pbtxt").write_text(
        'embeddings {\n  tensor_path: "00000/default/tensors.tsv"\n'
        '  metadata_path: "00000/default/metadata.tsv"\n'
        '  sprite {\n    image_path: "00000/default/sprite.png"\n  }\n}\n'
        'embeddings { tensor_path: "../../outside.tsv" }\n'
    )
    (tmp_path / "outside.tsv").write_text("secret")
    os.symlink(tmp_path / "outside.tsv", root / "run1" / "events.out.tfevents.link")
    return root


def test_discover_finds_event_and_projector_files_only_inside_logdir(logdir):
    found = {f.rel: f.size for f in discover(logdir)}
    assert found == {
        "run1/events.out.tfevents.1.host": 100,
        "run1/train/events.out.tfevents.2.host.v2": 50,
        "run1/projector_config.pbtxt": found["run1/projector_config.pbtxt"],
        "run1/00000/default/tensors.tsv": 4,
        "run1/00000/default/metadata.tsv": 2,
        "run1/00000/default/sprite.png": 4,
    }


class UploadStub:
    """Holds bytes per path like the server does and answers the logdir-upload protocol."""

    def __init__(self, preloaded=None, mismatch_once_at=None):
        self.held: dict[str, bytearray] = {k: bytearray(v) for k, v in (preloaded or {}).items()}
        self.mismatch_once_at = mismatch_once_at
        self.jobs = 0
        self.finished = []

    def __call__(self, req):
        split = urlsplit(req.path)
        path, query = split.path, parse_qs(split.query)
        if path == "/api/v1/projects/ws/p/uploads/":
            self.jobs += 1
            body = req.json()
            assert body["runs_mode"] in ("merge", "dirs")
            return (
                201,
                {},
                {
                    "id": self.jobs,
                    "state": "pending",
                    "files": [
                        {
                            "path": f["path"],
                            "bytes_received": len(self.held.get(f["path"], b"")),
                            "bytes_parsed": 0,
                        }
                        for f in body["files"]
                    ],
                },
            )
        if path.endswith("/files/content"):
            rel, offset = query["path"][0], int(query["offset"][0])
            held = self.held.setdefault(rel, bytearray())
            if self.mismatch_once_at is not None and offset == self.mismatch_once_at:
                # another uploader got there first: the server holds more than we think
                self.mismatch_once_at = None
                held.extend(req.body)
                return (
                    409,
                    {},
                    {
                        "error": {
                            "code": "offset_mismatch",
                            "message": "offset",
                            "expected_offset": len(held),
                        }
                    },
                )
            if offset != len(held):
                return (
                    409,
                    {},
                    {
                        "error": {
                            "code": "offset_mismatch",
                            "message": "offset",
                            "expected_offset": len(held),
                        }
                    },
                )
            held.extend(req.body)
            return 200, {}, {"bytes_received": len(held)}
        if path.endswith("/finish/"):
            self.finished.append(int(path.split("/")[4]))
            return 202, {}, {"id": self.jobs, "state": "pending"}
        if path.startswith("/api/v1/jobs/"):
            return (
                200,
                {},
                {
                    "id": self.jobs,
                    "kind": "upload",
                    "state": "succeeded",
                    "progress": 1.0,
                    "summary": {
                        "runs": 1,
                        "points": 42,
                        "images": 0,
                        "histograms": 0,
                        "skipped_records": 1,
                    },
                    "problems": [
                        {"file": "run1/x", "offset": 7, "kind": "crc", "message": "bad record"}
                    ],
                    "project_url": "http://ui/ws/p",
                },
            )
        return 404, {}, {"error": {"code": "not_found", "message": path}}


def test_resumes_from_server_offsets_and_follows_409(stub_server, logdir):
    event = logdir / "run1" / "events.out.tfevents.1.host"
    server = UploadStub(
        preloaded={"run1/events.out.tfevents.1.host": b"a" * 30}, mismatch_once_at=30
    )
    stub = stub_server(server)
    uploader = LogdirUploader(
        HttpClient(stub.url, "t"), "ws/p", logdir, chunk_size=16, progress=False
    )
    result = uploader.upload_round(uploader.changed_files())
    assert bytes(server.held["run1/events.out.tfevents.1.host"]) == event.read_bytes()
    assert bytes(server.held["run1/train/events.out.tfevents.2.host.v2"]) == b"b" * 50
    assert server.finished == [1]
    assert result.bytes_sent >= 70
    # nothing changed: a second round has nothing to send
    assert uploader.changed_files() == []


def test_cli_upload_prints_summary_and_url(stub_server, logdir, capsys):
    stub = stub_server(UploadStub())
    code = main(
        [
            "upload",
            str(logdir),
            "--project",
            "ws/p",
            "--url",
            stub.url,
            "--token",
            "t",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "points: 42" in out and "skipped records: 1" in out
    assert "run1/x @ 7: crc: bad record" in out
    assert "view at: http://ui/ws/p" in out


def test_cli_upload_watch_sends_appended_bytes_and_exits_cleanly(
    stub_server, logdir, capsys, monkeypatch
):
    server = UploadStub()
    stub = stub_server(server)
    event = logdir / "run1" / "events.out.tfevents.1.host"
    calls = {"n": 0}

    def fake_sleep(seconds):
        calls["n"] += 1
        if calls["n"] == 1:
            with open(event, "ab") as fh:
                fh.write(b"c" * 25)  # training appended a record
            return
        raise KeyboardInterrupt

    monkeypatch.setattr("tracker_client.cli.time.sleep", fake_sleep)
    code = main(
        [
            "upload",
            str(logdir),
            "--project",
            "ws/p",
            "--url",
            stub.url,
            "--token",
            "t",
            "--no-progress",
            "--watch",
            "--interval",
            "1",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert "Stopped watching" in out
    assert bytes(server.held["run1/events.out.tfevents.1.host"]) == b"a" * 100 + b"c" * 25
    assert server.jobs == 2  # the second round only listed the grown file
    assert json.dumps(server.finished) == "[1, 2]"

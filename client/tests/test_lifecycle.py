"""Process-level behaviour: atexit flush, failed status on an uncaught exception, read API."""

import math
import os
import subprocess
import sys

import pytest
from conftest import run_created
from tracker_client.api import Client

SCRIPT = """
import tracker_client as tc
tc.init(project="ws/p", telemetry=False)
for step in range(1000):
    tc.log({"loss": 1.0 / (step + 1)})
if CRASH:
    raise ValueError("training diverged")
"""


def _handler(req):
    if req.method == "POST" and req.path.endswith("/runs/"):
        return run_created(req)
    return 200, {}, {}


@pytest.mark.parametrize(("crash", "status"), [(False, "finished"), (True, "failed")])
def test_atexit_flushes_and_sets_status(stub_server, crash, status):
    stub = stub_server(_handler)
    env = {**os.environ, "TRACKER_URL": stub.url, "TRACKER_TOKEN": "t"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("CRASH", str(crash))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode != 0) == crash
    points = sum(
        len(s["steps"]) for r in stub.matching("POST", "/metrics/") for s in r.json()["series"]
    )
    assert points == 1000
    assert stub.matching("PATCH", "/runs/7/")[-1].json() == {"status": status}


EXIT_MEDIA = """
import numpy as np, sys, tracker_client as tc
tc.init(project="ws/p", telemetry=False)
for i in range(70):
    tc.log_image("img", np.zeros((8, 8, 3), dtype=np.uint8), step=i)
tc.log_artifact(sys.argv[1])
# no finish(): the atexit handler must deliver images and the artifact
"""


def test_atexit_delivers_images_and_artifacts(stub_server, tmp_path):
    def handler(req):
        path = req.path.split("?")[0]
        if req.method == "POST" and path.endswith("/projects/ws/p/runs/"):
            return run_created(req)
        if path == "/api/v1/runs/7/artifacts/":
            return (
                201,
                {},
                {
                    "id": 5,
                    "path": "w.bin",
                    "state": "pending",
                    "upload": {"mode": "chunked", "chunk_size": 1 << 20, "offset": 0},
                },
            )
        if path == "/api/v1/artifacts/5/content":
            return 200, {}, {"offset": len(req.body)}
        if path == "/api/v1/artifacts/5/complete/":
            return 200, {}, {"id": 5, "state": "ready"}
        if path.endswith("/images/"):
            return 201, {}, {"images": []}
        return 200, {}, {}

    stub = stub_server(handler)
    artifact = tmp_path / "w.bin"
    artifact.write_bytes(b"w" * 1000)
    env = {**os.environ, "TRACKER_URL": stub.url, "TRACKER_TOKEN": "t"}
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_MEDIA, str(artifact)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(stub.matching("POST", "/images/")) == 2
    assert stub.matching("POST", "/artifacts/5/complete/")
    assert stub.matching("PATCH", "/runs/7/")[-1].json() == {"status": "finished"}


def test_read_api_history(stub_server):
    lines = "\n".join(
        [
            '{"key": "loss", "step": 0, "wall_time": 1.0, "value": 0.5}',
            '{"key": "acc", "step": 0, "wall_time": 1.5, "value": "NaN"}',
            '{"key": "loss", "step": 1, "wall_time": 2.0, "value": 0.25}',
            "",
        ]
    ).encode()

    def handler(req):
        if req.path.startswith("/api/v1/projects/ws/p/runs/"):
            page = {"results": [{"id": 3, "name": "a"}], "next": None}
            return 200, {}, page
        if req.path.startswith("/api/v1/runs/3/series/export"):
            assert "format=jsonl" in req.path
            return 200, {"Content-Type": "application/x-ndjson"}, lines
        if req.path == "/api/v1/runs/3/":
            return 200, {}, {"id": 3, "name": "a", "params": {"lr": 0.1}, "status": "finished"}
        return 404, {}, {"error": {"code": "not_found", "message": "nope"}}

    stub = stub_server(handler)
    client = Client(url=stub.url, token="t")
    (listed,) = client.runs("ws/p")
    assert listed.id == 3 and listed.name == "a"
    run = client.run(3)
    assert run.params == {"lr": 0.1}
    rows = run.history()
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["loss"] == 0.5 and math.isnan(rows[0]["acc"]) and rows[0]["wall_time"] == 1.5
    frame = run.history(["loss"], pandas=True)
    assert list(frame["loss"]) == [0.5, 0.25] or frame.shape[0] == 2
    assert run.media("histograms") is None and run.histograms() == []


def test_export_streams_the_server_document(stub_server, tmp_path, capsys):
    from tracker_client.cli import main

    doc = b'{"format":"tracker-export","version":1,"project":"ws/p","runs":[]}'
    stub = stub_server(
        lambda req: (
            (200, {}, doc)
            if req.path == "/api/v1/projects/ws/p/export?format=json"
            else (404, {}, {})
        )
    )
    out = tmp_path / "out.json"
    assert (
        main(["export", "--project", "ws/p", "-o", str(out), "--url", stub.url, "--token", "t"])
        == 0
    )
    assert out.read_bytes() == doc


def test_export_falls_back_to_per_run_reads(stub_server, tmp_path):
    import json

    from tracker_client.cli import main

    def handler(req):
        path = req.path.split("?")[0]
        if path == "/api/v1/projects/ws/p/runs/":
            return 200, {}, {"results": [{"id": 3}], "next": None}
        if path == "/api/v1/runs/3/":
            return 200, {}, {"id": 3, "name": "a", "params": {"lr": 0.1}, "status": "finished"}
        if path == "/api/v1/runs/3/series/export":
            return 200, {}, b'{"key":"loss","step":0,"wall_time":1.0,"value":"Infinity"}\n'
        if path == "/api/v1/runs/3/images/":
            return (
                200,
                {},
                {
                    "results": [{"key": "img", "step": 1, "width": 2, "height": 3, "sha256": "ab"}],
                    "next": None,
                },
            )
        return 404, {}, {"error": {"code": "not_found", "message": "no"}}

    stub = stub_server(handler)
    out = tmp_path / "out.json"
    assert (
        main(["export", "--project", "ws/p", "-o", str(out), "--url", stub.url, "--token", "t"])
        == 0
    )
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]
    assert run["params"] == {"lr": 0.1}
    assert run["series"] == {"loss": [[0, 1.0, "Infinity"]]}
    assert run["images"] == [{"tag": "img", "step": 1, "width": 2, "height": 3, "sha256": "ab"}]


def test_runs_filter_uses_the_runs_table(stub_server):
    from urllib.parse import parse_qs, urlsplit

    seen = []

    def handler(req):
        split = urlsplit(req.path)
        seen.append((split.path, parse_qs(split.query)))
        return 200, {}, {"results": [{"id": 1, "name": "a"}], "next": None}

    stub = stub_server(handler)
    client = Client(url=stub.url, token="t")
    (run,) = client.runs("ws/p", filter="params.lr < 0.01", sort="-created_at")
    assert run.id == 1
    path, query = seen[0]
    assert path == "/api/v1/projects/ws/p/runs/table"
    assert query["filter"] == ["params.lr < 0.01"] and query["sort"] == ["-created_at"]

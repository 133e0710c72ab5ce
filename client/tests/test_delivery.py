"""Delivery behaviour against a scripted HTTP stub: retries, keys, drops, outages, sync."""

import json
import logging
import threading
import time

import numpy as np
import pytest
from conftest import parse_multipart, run_created
from tracker_client import Run
from tracker_client.http import HttpClient, RetryPolicy
from tracker_client.journal import Journal, list_journal_dirs
from tracker_client.sync import sync_journal


def scripted(metric_replies):
    """Handler: creates runs, answers metrics with the scripted replies then 200s."""
    replies = list(metric_replies)
    lock = threading.Lock()

    def handler(req):
        path = req.path.split("?")[0]
        if req.method == "POST" and path.endswith("/runs/"):
            return run_created(req)
        if path.endswith("/metrics/"):
            with lock:
                if replies:
                    return replies.pop(0)
            return 200, {}, {"stored": 1}
        if path.endswith("/images/"):
            return 201, {}, {"images": []}
        return 200, {}, {}

    return handler


def metric_requests(stub):
    return stub.matching("POST", "/metrics/")


def test_retries_reuse_the_idempotency_key(stub_server):
    stub = stub_server(
        scripted(
            [
                (500, {}, {"error": {"code": "oops", "message": "boom"}}),
                (503, {}, {}),
                (429, {"Retry-After": "0"}, {"error": {"code": "slow", "message": "slow down"}}),
            ]
        )
    )
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    assert run.id == 7
    run.log({"loss": 1.0, "acc": 0.5})
    run.log({"loss": 0.5, "acc": 0.75})
    run.finish()
    reqs = metric_requests(stub)
    assert len(reqs) == 4
    assert len({r.headers["idempotency-key"] for r in reqs}) == 1
    assert len({r.body for r in reqs}) == 1  # the exact same bytes every time
    assert reqs[0].headers["content-encoding"] == "gzip"
    doc = reqs[-1].json()
    assert {s["key"]: s["values"] for s in doc["series"]} == {
        "loss": [1.0, 0.5],
        "acc": [0.5, 0.75],
    }
    assert run.stats["points_sent"] == 4
    patch = stub.matching("PATCH", "/runs/7/")[-1]
    assert patch.json() == {"status": "finished"}
    assert patch.headers["user-agent"].startswith("tracker-client/")
    assert patch.headers["authorization"] == "Bearer t"


def test_retry_after_is_honoured(stub_server):
    stub = stub_server(scripted([(429, {"Retry-After": "1"}, {})]))
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    run.log({"x": 1})
    started = time.monotonic()
    assert run.flush(timeout=20)
    assert time.monotonic() - started >= 0.95
    run.finish()


def test_distinct_batches_get_distinct_keys(stub_server):
    stub = stub_server(scripted([]))
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    run.log({"x": 1})
    run.flush()
    run.log({"x": 2})
    run.flush()
    run.finish()
    keys = [r.headers["idempotency-key"] for r in metric_requests(stub)]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_permanent_error_drops_only_that_batch(stub_server, caplog):
    stub = stub_server(
        scripted([(400, {}, {"error": {"code": "invalid", "message": "step out of range"}})])
    )
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    with caplog.at_level(logging.ERROR, logger="tracker_client"):
        run.log({"x": 1})
        run.flush()
        run.log({"x": 2})
        run.flush()
    run.finish()
    assert "step out of range" in caplog.text
    assert run.stats["batches_dropped"] == 1
    assert run.stats["points_dropped"] == 1
    assert run.stats["points_sent"] == 1
    assert len(metric_requests(stub)) == 2  # no retry of the rejected batch


def test_outage_spools_to_journal_and_recovers_in_order(stub_server, monkeypatch):
    monkeypatch.setenv("TRACKER_OFFLINE_GRACE", "0.5")
    stub = stub_server(scripted([]))
    port = int(stub.url.rsplit(":", 1)[1])
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    run.log({"loss": 0.0})
    assert run.flush()
    stub.stop()  # the server goes away
    for step in range(1, 4):
        run.log({"loss": float(step)})
        run._pipeline.form_now()
    assert run.flush(timeout=10) is False  # parked on disk, not delivered
    journal_dir = run.journal_dir
    assert journal_dir is not None and (journal_dir / "records.log").exists()
    assert run._pipeline.offline
    stub_server(port=port, stub=stub)  # back on the same address
    run.log({"loss": 4.0})
    deadline = time.monotonic() + 30
    while run._pipeline.offline and time.monotonic() < deadline:
        time.sleep(0.1)
    run.finish()
    steps = []
    for req in metric_requests(stub):
        for series in req.json()["series"]:
            steps.extend(series["steps"])
    assert steps == [0, 1, 2, 3, 4]  # everything once, in logging order
    assert not journal_dir.exists()  # drained journal is removed


def test_images_are_sent_in_groups_of_64(stub_server):
    stub = stub_server(scripted([]))
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    img = np.zeros((16, 8, 3), dtype=np.uint8)
    for i in range(70):
        run.log_image("samples", img, step=i, caption=f"c{i}")
    run.finish()
    reqs = stub.matching("POST", "/images/")
    assert len(reqs) == 2
    metas = []
    for req in reqs:
        meta, files = parse_multipart(req)
        assert len(meta) <= 64
        assert set(files) == {m["field"] for m in meta}
        assert all(data.startswith(b"\x89PNG") for data in files.values())
        assert req.headers["idempotency-key"]
        metas.extend(meta)
    assert sorted(m["step"] for m in metas) == list(range(70))  # two lanes: any order
    by_step = {m["step"]: m for m in metas}
    assert by_step[3]["caption"] == "c3" and by_step[3]["key"] == "samples"
    assert run.stats["images_sent"] == 70


def test_image_requests_overlap_but_metrics_stay_sequential(stub_server):
    active = {"images": 0, "max_images": 0, "metrics": 0, "max_metrics": 0}
    lock = threading.Lock()
    base = scripted([])

    def slow(req):
        kind = (
            "images" if "/images/" in req.path else "metrics" if "/metrics/" in req.path else None
        )
        if kind is None:
            return base(req)
        with lock:
            active[kind] += 1
            active["max_" + kind] = max(active["max_" + kind], active[kind])
        time.sleep(0.2)
        with lock:
            active[kind] -= 1
        return base(req)

    stub = stub_server(slow)
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    img = np.zeros((4, 4), dtype=np.uint8)
    for i in range(64 * 4):
        run.log_image("x", img, step=i)
    run._pipeline.form_now()
    for i in range(3):
        run.log({"m": float(i)})
        run._pipeline.form_now()
    run.finish()
    assert len(stub.matching("POST", "/metrics/")) == 3
    # At most 64 images a request; the former may wake mid-loop and split them further.
    assert len(stub.matching("POST", "/images/")) >= 4
    assert run._pipeline.stats["images_sent"] == 64 * 4
    assert active["max_images"] == 2
    assert active["max_metrics"] == 1


def test_server_down_at_init_creates_run_lazily_then_sync_delivers(
    stub_server, closed_port_url, monkeypatch
):
    monkeypatch.setenv("TRACKER_OFFLINE_GRACE", "0.2")
    run = Run(
        project="ws/p",
        name="lazy",
        params={"lr": 0.1},
        url=closed_port_url,
        token="t",
        telemetry=False,
    )
    assert run.id is None and run.local_id.startswith("local-")
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1)})
    run.log_text("notes", "hello")
    run.finish()
    (directory,) = list_journal_dirs()
    assert directory.name == run.local_id

    stub = stub_server(scripted([]))
    result = sync_journal(directory, http=HttpClient(stub.url, "t"))
    assert result.error is None
    assert result.run_id == 7
    kinds = [(r.method, r.path.split("?")[0]) for r in stub.requests]
    assert kinds[0] == ("POST", "/api/v1/projects/ws/p/runs/")
    assert stub.requests[0].json()["params"] == {"lr": 0.1}
    assert ("POST", "/api/v1/runs/7/metrics/") in kinds
    assert ("POST", "/api/v1/runs/7/text/") in kinds
    assert kinds[-1] == ("PATCH", "/api/v1/runs/7/")  # status comes after all data
    assert stub.requests[-1].json() == {"status": "finished"}
    assert not directory.exists()


def test_replay_after_lost_acks_resends_same_keys(stub_server):
    """Exactly-once across restarts: what was sent but not acknowledged on disk is re-sent with
    the original Idempotency-Key, which is what lets the server de-duplicate it."""
    run = Run(project="ws/p", url="http://127.0.0.1:9", offline=True, telemetry=False)
    for step in range(5):
        run.log({"x": float(step)})
        run._pipeline.form_now()
    run.finish()
    (directory,) = list_journal_dirs()

    fail_after = {"n": 2}

    def flaky(req):
        path = req.path.split("?")[0]
        if path.endswith("/runs/") and req.method == "POST":
            return run_created(req)
        if path.endswith("/metrics/"):
            if fail_after["n"] == 0:
                return 503, {}, {}
            fail_after["n"] -= 1
        return 200, {}, {}

    stub = stub_server(flaky)
    no_retry = RetryPolicy(max_attempts=1)
    first = sync_journal(directory, http=HttpClient(stub.url, "t"), retry=no_retry)
    assert first.error and directory.exists()
    first_keys = [r.headers["idempotency-key"] for r in stub.matching("POST", "/metrics/")][:2]
    create_key = stub.matching("POST", "/runs/")[0].headers["idempotency-key"]
    assert json.loads((directory / "meta.json").read_text())["server_run_id"] == 7

    # simulate a crash that lost the acknowledgement log
    (directory / "acks.log").write_bytes(b"")
    stub.requests.clear()
    fail_after["n"] = 100
    second = sync_journal(directory, http=HttpClient(stub.url, "t"), retry=no_retry)
    assert second.error is None, second.error
    resent = [r.headers["idempotency-key"] for r in stub.matching("POST", "/metrics/")]
    assert resent[:2] == first_keys  # same keys: the server answers them as duplicates
    assert len(resent) == 5
    # the create_run ack was lost too: it is re-sent with its original key, so the server
    # returns the run it already created instead of making a second one
    (create,) = stub.matching("POST", "/runs/")
    assert create.headers["idempotency-key"] == create_key
    assert not directory.exists()


def test_offline_run_never_touches_the_network(closed_port_url):
    run = Run(project="ws/p", url=closed_port_url, offline=True, telemetry=False)
    run.log({"a": 1})
    run.log_params({"b": {"c": 2}})
    run.set_tags(["x"])
    run.finish()
    (directory,) = list_journal_dirs()
    j = Journal(directory)
    kinds = [r.kind for r in j]
    assert kinds == ["create_run", "params", "patch", "metric_columns", "patch"]
    assert [r.json_body() for r in j if r.kind == "params"] == [{"params": {"b/c": 2}}]
    j.close(remove_if_empty=False)


def test_context_manager_marks_failed_on_exception(stub_server):
    stub = stub_server(scripted([]))
    with (
        pytest.raises(RuntimeError),
        Run(project="ws/p", url=stub.url, token="t", telemetry=False) as run,
    ):
        run.log({"a": 1})
        raise RuntimeError("diverged")
    assert stub.matching("PATCH", "/runs/7/")[-1].json() == {"status": "failed"}


def test_init_fails_fast_on_client_errors(stub_server):
    from tracker_client import ApiError

    stub = stub_server(
        lambda req: (404, {}, {"error": {"code": "not_found", "message": "no such project"}})
    )
    with pytest.raises(ApiError, match="no such project"):
        Run(project="ws/missing", url=stub.url, token="t", telemetry=False)


def test_missing_token_is_a_clear_error(stub_server):
    from tracker_client import ConfigError

    with pytest.raises(ConfigError, match="no API token"):
        Run(project="ws/p", url="http://127.0.0.1:9", telemetry=False)


def test_a_server_without_the_columns_encoding_gets_json_under_the_same_key(stub_server):
    """An older server answers 415 to the binary columns: the batch goes again as the JSON it
    stands for, with the same Idempotency-Key, and nothing is dropped."""

    def handler(req):
        if req.path.endswith("/metrics/") and req.headers["content-type"] != "application/json":
            return 415, {}, {"error": {"code": "unsupported_media_type", "message": "no"}}
        return scripted([])(req)

    stub = stub_server(handler)
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    run.log({"loss": 1.0, "acc": float("nan")})
    run.log({"loss": float("inf")})
    run.finish()
    columns_req, json_req = metric_requests(stub)
    assert columns_req.headers["content-type"] == "application/vnd.tracker.columns"
    assert json_req.headers["idempotency-key"] == columns_req.headers["idempotency-key"]
    assert json_req.headers["content-encoding"] == "gzip"
    doc = json_req.json()
    assert [(s["key"], s["steps"], s["values"]) for s in doc["series"]] == [
        ("loss", [0, 1], [1.0, "Infinity"]),  # one series per key, in logging order
        ("acc", [0], ["NaN"]),
    ]
    assert run.stats["points_sent"] == 3 and run.stats["batches_dropped"] == 0


def test_a_wake_up_forms_whole_batches_and_keeps_the_rest_for_later(stub_server, monkeypatch):
    """Points logged while the former wakes up would otherwise leave a small batch behind each
    full one; the rest waits for the next batch (or the next tick, or a flush)."""
    monkeypatch.setenv("TRACKER_BATCH_POINTS", "1000")
    stub = stub_server(scripted([]))
    run = Run(project="ws/p", url=stub.url, token="t", telemetry=False)
    pipeline = run._pipeline
    pipeline._stop_former.set()  # form by hand, deterministically
    pipeline._wake_event.set()
    pipeline._former.join()
    keys = [f"k{j}" for j in range(10)]
    for step in range(150):
        run.log(dict.fromkeys(keys, 0.5), step=step)
    pipeline.form_now(whole_batches=True)  # 1,500 points: one batch, 500 kept
    for step in range(150, 220):
        run.log(dict.fromkeys(keys, 0.5), step=step)
    pipeline.form_now(whole_batches=True)  # 500 + 700: one batch, 200 kept
    assert run.flush(timeout=20)  # a flush sends everything
    sizes = [sum(len(s["steps"]) for s in r.json()["series"]) for r in metric_requests(stub)]
    assert sizes == [1000, 1000, 200]
    steps = [
        s["steps"] for r in metric_requests(stub) for s in r.json()["series"] if s["key"] == "k3"
    ]
    assert sum(steps, []) == list(range(220))
    run.finish()


def test_a_journal_from_before_the_columns_encoding_is_still_delivered_as_json(stub_server):
    """Journals are replayed byte for byte: a `metrics` record written by an older client
    keeps its JSON body and content type."""
    import gzip as gz

    from tracker_client.records import METRICS, Record, new_key

    run = Run(project="ws/p", url="http://127.0.0.1:9", offline=True, telemetry=False)
    run.log({"new": 1.0})
    run.finish()
    (directory,) = list_journal_dirs()
    journal = Journal(directory)
    old = {"series": [{"key": "old", "steps": [3], "values": ["NaN"], "wall_times": [1.7e9]}]}
    body = gz.compress(json.dumps(old).encode())
    journal.append(Record(METRICS, 1000, new_key(), body, count=1))
    journal.close(remove_if_empty=False)
    stub = stub_server(scripted([]))
    assert sync_journal(directory, http=HttpClient(stub.url, "t")).error is None
    sent = {r.headers["content-type"]: r.json()["series"] for r in metric_requests(stub)}
    assert set(sent) == {"application/vnd.tracker.columns", "application/json"}
    ((new,),) = [sent["application/vnd.tracker.columns"]]
    assert (new["key"], new["steps"], new["values"]) == ("new", [0], [1.0])
    assert sent["application/json"] == old["series"]

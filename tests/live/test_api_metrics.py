"""POST /runs/{id}/metrics/: validation before storage, idempotent replay, roles."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from tests.helpers import post_metrics
from tracker.models import IdempotencyRecord, RunStatus, Series, SeriesChunk
from tracker.selectors.series import read_points

pytestmark = pytest.mark.django_db


def url(run: Any) -> str:
    return f"/api/v1/runs/{run.pk}/metrics/"


def post(client: Any, run: Any, body: Any, key: str | None = None, gz: bool = False) -> Any:
    return post_metrics(client, run, json.dumps(body).encode(), "application/json", key, gz)


def points(run: Any, key: str) -> Any:
    return read_points(Series.objects.get(run=run, key=key))


def test_stores_columnar_batch_with_nonfinite_values(api, tenants, run):
    body = {
        "series": [
            {
                "key": "loss",
                "steps": [0, 1, 2, 3],
                "values": [0.9, "NaN", "Infinity", "-Infinity"],
                "wall_times": [1.7e9, 1.7e9 + 0.1, 1.7e9 + 0.2, 1.7e9 + 0.3],
            },
            {"key": "train/acc", "steps": [5], "values": [1], "wall_times": [1.7e9]},
        ]
    }
    r = post(api(tenants.bob), run, body, key="batch-0001", gz=True)
    assert r.status_code == 200, r.content
    assert r.json() == {"stored": 5}
    pts = points(run, "loss")
    assert pts.steps.tolist() == [0, 1, 2, 3]
    assert pts.values[0] == 0.9 and math.isnan(pts.values[1])
    assert pts.values[2] == math.inf and pts.values[3] == -math.inf
    assert pts.walls.tolist() == pytest.approx([1.7e9, 1.7e9 + 0.1, 1.7e9 + 0.2, 1.7e9 + 0.3])
    acc = Series.objects.get(run=run, key="train/acc")
    assert (acc.count, acc.last_value, acc.last_step) == (1, 1.0, 5)


def test_same_step_again_overwrites(api, tenants, run):
    c = api(tenants.bob)
    post(
        c, run, {"series": [{"key": "x", "steps": [1, 2], "values": [1, 2], "wall_times": [1, 2]}]}
    )
    post(
        c, run, {"series": [{"key": "x", "steps": [2, 3], "values": [20, 3], "wall_times": [2, 3]}]}
    )
    pts = points(run, "x")
    assert pts.steps.tolist() == [1, 2, 3]
    assert pts.values.tolist() == [1.0, 20.0, 3.0]


def test_missing_wall_times_use_server_clock(api, tenants, run):
    r = post(api(tenants.bob), run, {"series": [{"key": "x", "steps": [1], "values": [1.5]}]})
    assert r.status_code == 200
    assert points(run, "x").walls[0] > 1.6e9


def test_idempotent_replay_stores_once_and_returns_first_response(api, tenants, run):
    c = api(tenants.bob)
    body = {"series": [{"key": "x", "steps": [1, 2], "values": [1, 2], "wall_times": [1, 2]}]}
    first = post(c, run, body, key="retry-key-1")
    # The same key with a different body is still a replay: the key identifies the batch.
    other = {"series": [{"key": "x", "steps": [9], "values": [9], "wall_times": [9]}]}
    second = post(c, run, other, key="retry-key-1")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() == {"stored": 2}
    assert second["Idempotent-Replayed"] == "true"
    assert points(run, "x").steps.tolist() == [1, 2]
    assert IdempotencyRecord.objects.filter(scope=f"run:{run.pk}:metrics").count() == 1


def test_keys_are_scoped_per_run(api, tenants, run):
    from tests.factories import RunFactory

    run2 = RunFactory(project=tenants.vision)
    c = api(tenants.bob)
    body = {"series": [{"key": "x", "steps": [1], "values": [1], "wall_times": [1]}]}
    post(c, run, body, key="shared-key-1")
    post(c, run2, body, key="shared-key-1")
    assert points(run2, "x").steps.tolist() == [1]


def test_finished_run_accepts_late_points(api, tenants, run):
    run.status = RunStatus.FINISHED
    run.save()
    r = post(api(tenants.bob), run, {"series": [{"key": "x", "steps": [1], "values": [1]}]})
    assert r.status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.FINISHED


GOOD = {"key": "ok", "steps": [0, 1], "values": [1.0, 2.0], "wall_times": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"key": "x", "steps": [-1], "values": [1], "wall_times": [1]}, "series[1].steps", ">= 0"),
        (
            {"key": "x", "steps": [1.5], "values": [1], "wall_times": [1]},
            "series[1].steps",
            "integers",
        ),
        (
            {"key": "x", "steps": [1.0], "values": [1], "wall_times": [1]},
            "series[1].steps",
            "integers",
        ),
        (
            {"key": "x", "steps": [True], "values": [1], "wall_times": [1]},
            "series[1].steps",
            "integers",
        ),
        (
            {"key": "x", "steps": ["1"], "values": [1], "wall_times": [1]},
            "series[1].steps",
            "integers",
        ),
        (
            {"key": "x", "steps": [2**63], "values": [1], "wall_times": [1]},
            "series[1].steps",
            "2^63",
        ),
        (
            {"key": "x", "steps": [1], "values": ["nan"], "wall_times": [1]},
            "series[1].values",
            "NaN",
        ),
        (
            {"key": "x", "steps": [1], "values": [None], "wall_times": [1]},
            "series[1].values",
            "NaN",
        ),
        ({"key": "x", "steps": [1], "values": [[1]], "wall_times": [1]}, "series[1].values", "NaN"),
        (
            {"key": "x", "steps": [1], "values": [True], "wall_times": [1]},
            "series[1].values",
            "NaN",
        ),
        (
            {"key": "x", "steps": [1], "values": [1], "wall_times": ["NaN"]},
            "series[1].wall_times",
            "finite",
        ),
        (
            {"key": "x", "steps": [1], "values": [1], "wall_times": [None]},
            "series[1].wall_times",
            "finite",
        ),
        (
            {"key": "x", "steps": [1, 2], "values": [1], "wall_times": [1, 2]},
            "series[1]",
            "same length",
        ),
        (
            {"key": "x", "steps": [1], "values": [1], "wall_times": [1, 2]},
            "series[1]",
            "same length",
        ),
        ({"key": "x" * 256, "steps": [1], "values": [1]}, "series[1].key", "1-255"),
        ({"key": "bad\nkey", "steps": [1], "values": [1]}, "series[1].key", "1-255"),
        ({"key": "a/../b", "steps": [1], "values": [1]}, "series[1].key", "1-255"),
        ({"key": 5, "steps": [1], "values": [1]}, "series[1].key", "1-255"),
        ({"key": "x", "steps": 1, "values": [1]}, "series[1].steps", "list"),
        ("not an object", "series[1]", "object"),
    ],
)
def test_bad_points_are_refused_and_nothing_is_stored(api, tenants, run, bad, field, words):
    r = post(api(tenants.bob), run, {"series": [GOOD, bad]}, key="bad-batch-1")
    assert r.status_code == 400, r.content
    err = r.json()["error"]
    assert err["field"] == field
    assert words in err["message"]
    assert not Series.objects.filter(run=run).exists()
    assert not IdempotencyRecord.objects.exists()
    # A corrected retry under the same key is not blocked by the refused attempt.
    assert post(api(tenants.bob), run, {"series": [GOOD]}, key="bad-batch-1").status_code == 200


def test_bare_nan_is_not_json(api, tenants, run):
    raw = b'{"series": [{"key": "x", "steps": [1], "values": [NaN], "wall_times": [1]}]}'
    r = api(tenants.bob).post(url(run), raw, content_type="application/json")
    assert r.status_code == 400
    assert "NaN" in r.json()["error"]["message"]
    assert not Series.objects.exists()


@pytest.mark.parametrize("body", [[], {"series": {}}, {"nope": 1}, {"series": "x"}])
def test_wrong_shapes(api, tenants, run, body):
    r = post(api(tenants.bob), run, body)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "series"


def test_oversized_batches(api, tenants, run):
    c = api(tenants.bob)
    n = 100_001
    big = {"series": [{"key": "x", "steps": list(range(n)), "values": [0.0] * n}]}
    r = post(c, run, big, gz=True)
    assert r.status_code == 413
    assert "100000" in r.json()["error"]["message"]
    many = {"series": [{"key": f"k{i}", "steps": [1], "values": [1]} for i in range(1001)]}
    r = post(c, run, many)
    assert r.status_code == 413
    assert "1000 series" in r.json()["error"]["message"]
    assert not Series.objects.exists()


def test_exactly_at_limits_is_fine(api, tenants, run):
    n = 100_000
    steps = list(range(n))
    vals = np.random.default_rng(0).standard_normal(n).tolist()
    r = post(
        api(tenants.bob), run, {"series": [{"key": "x", "steps": steps, "values": vals}]}, gz=True
    )
    assert r.status_code == 200
    pts = points(run, "x")
    assert len(pts) == n and pts.values.tolist() == vals
    assert SeriesChunk.objects.filter(series__run=run).count() >= 1


def test_bad_gzip_and_bad_idempotency_key(api, tenants, run):
    c = api(tenants.bob)
    r = c.post(url(run), b"not gzip", content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 400
    r = post(c, run, {"series": [GOOD]}, key="bad key with spaces")
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "Idempotency-Key"
    assert not Series.objects.exists()


def test_roles(api, tenants, run, other_run):
    body = {"series": [GOOD]}
    assert post(api(tenants.carol), run, body).status_code == 403
    assert post(api(tenants.mallory), run, body).status_code == 404
    assert post(api(), run, body).status_code == 404  # anonymous on a private project
    assert post(api(tenants.alice), other_run, body).status_code == 404
    r404 = api(tenants.bob).post("/api/v1/runs/999999999/metrics/", {}, format="json")
    r_other = post(api(tenants.bob), other_run, body)
    assert r404.status_code == r_other.status_code == 404
    assert r404.json() == r_other.json()
    assert not Series.objects.exists()
    assert post(api(tenants.alice), run, body).status_code == 200

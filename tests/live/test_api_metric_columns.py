"""POST /runs/{id}/metrics/ with a binary columns body (`application/vnd.tracker.columns`):
stored exactly like the JSON form, and every malformed body refused with a 4xx naming the
problem, nothing stored."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pytest

from tests.helpers import post_metrics
from tracker.models import IdempotencyRecord, Series
from tracker.selectors.series import read_points
from tracker.services.metric_columns import MEDIA_TYPE

pytestmark = pytest.mark.django_db


def frame(columns: list[np.ndarray], series: list[dict[str, Any]], **header_extra: Any) -> bytes:
    """A columns body built from the contract's layout (independently of the client's code)."""
    header = json.dumps(
        {
            "columns": [
                {"dtype": "i8" if c.dtype.kind == "i" else "f8", "n": len(c)} for c in columns
            ],
            "series": series,
            **header_extra,
        }
    ).encode()
    start = 8 + len(header)
    data = b"".join(c.astype("<i8" if c.dtype.kind == "i" else "<f8").tobytes() for c in columns)
    return b"TKC1" + struct.pack("<I", len(header)) + header + b"\0" * (-start % 8) + data


def post(client: Any, run: Any, raw: bytes, key: str | None = None, gz: bool = False) -> Any:
    return post_metrics(client, run, raw, MEDIA_TYPE, key, gz)


def steps(*s: int) -> np.ndarray:
    return np.array(s, dtype=np.int64)


def floats(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def one(key: str = "x", s: int = 0, v: int = 1, w: int | None = 2) -> dict[str, Any]:
    return {"key": key, "steps": s, "values": v, "wall_times": w}


def test_shared_step_and_wall_columns_store_like_json(api, tenants, run):
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_1234))[0]
    cols = [
        steps(0, 1, 2, 3),
        floats(1.7e9, 1.7e9 + 0.1, 1.7e9 + 0.2, 1.7e9 + 0.3),
        floats(0.9, nan_payload, math.inf, -math.inf),
        floats(1, 2, 3, 4),
    ]
    body = frame(cols, [one("loss", 0, 2, 1), one("train/acc", 0, 3, 1)])
    r = post(api(tenants.bob), run, body, key="columns-0001", gz=True)
    assert r.status_code == 200, r.content
    assert r.json() == {"stored": 8}
    loss = read_points(Series.objects.get(run=run, key="loss"))
    assert loss.steps.tolist() == [0, 1, 2, 3]
    assert loss.values.view(np.uint64).tolist() == cols[2].view(np.uint64).tolist()  # bit-exact
    assert loss.walls.tolist() == pytest.approx(cols[1].tolist())
    acc = Series.objects.get(run=run, key="train/acc")
    assert (acc.count, acc.last_value, acc.last_step, acc.min_value) == (4, 4.0, 3, 1.0)


def test_a_key_in_several_series_is_concatenated_in_order(api, tenants, run):
    cols = [steps(0, 1), floats(5, 6), floats(1, 2), steps(1, 2), floats(7, 8), floats(20, 3)]
    body = frame(cols, [one("x", 0, 2, 1), one("x", 3, 5, 4)])
    assert post(api(tenants.bob), run, body).status_code == 200
    pts = read_points(Series.objects.get(run=run, key="x"))
    assert pts.steps.tolist() == [0, 1, 2]
    assert pts.values.tolist() == [1.0, 20.0, 3.0]  # step 1 again: the later point wins


def test_wall_times_may_be_left_to_the_server(api, tenants, run):
    body = frame([steps(4), floats(1.5)], [one("x", 0, 1, None)])
    assert post(api(tenants.bob), run, body).status_code == 200
    assert read_points(Series.objects.get(run=run, key="x")).walls[0] > 1.6e9


def test_replay_with_the_same_key_stores_once(api, tenants, run):
    c = api(tenants.bob)
    body = frame([steps(0, 1), floats(1, 2), floats(3, 4)], [one()])
    first = post(c, run, body, key="columns-again")
    second = post(c, run, body, key="columns-again")
    assert first.json() == second.json() == {"stored": 2}
    assert second["Idempotent-Replayed"] == "true"
    assert Series.objects.get(run=run, key="x").count == 2
    assert IdempotencyRecord.objects.count() == 1


def test_the_client_encoder_agrees_with_the_server(api, tenants, run):
    from tracker_client.batching import form_metric_batches

    dicts = [{"a": float(i), "b": i} for i in range(10)] + [{"b": math.nan}]
    ((raw, n),) = form_metric_batches((list(range(11)), [1.7e9 + i for i in range(11)], dicts))
    r = post(api(tenants.bob), run, raw, gz=True)
    assert r.json() == {"stored": n} == {"stored": 21}
    b = read_points(Series.objects.get(run=run, key="b"))
    assert b.steps.tolist() == list(range(11))
    assert b.values[:10].tolist() == list(range(10)) and math.isnan(b.values[10])


GOOD = [steps(0, 1), floats(1, 2), floats(1.7e9, 1.7e9)]


def _replace_header(raw: bytes, header: bytes) -> bytes:
    (hlen,) = struct.unpack_from("<I", raw, 4)
    return raw[:4] + struct.pack("<I", len(header)) + header + raw[8 + hlen :]


@pytest.mark.parametrize(
    "raw, status, field, words",
    [
        (b"", 400, "series", "list"),  # an empty body is an empty document
        (b'{"series": []}', 400, "body", "TKC1"),
        (b"TKC1" + struct.pack("<I", 10**6) + b"{}", 400, "body", "runs past the end"),
        (b"TKC1" + struct.pack("<I", 3) + b"{x}" + b"\0" * 5, 400, "header", "not JSON"),
        (b"TKC1" + struct.pack("<I", 2) + b"[]" + b"\0" * 6, 400, "header", "object"),
        (frame(GOOD, [one()])[:-3], 400, "columns[2]", "past the end"),
        (frame(GOOD, [one()]) + b"\0" * 8, 400, "body", "header describes"),
        (frame(GOOD, [one("x", 1, 1, 2)]), 400, "series[0].steps", '"i8" column'),
        (frame(GOOD, [one("x", 0, 0, 2)]), 400, "series[0].values", '"f8" column'),
        (frame(GOOD, [one("x", 0, 9, 2)]), 400, "series[0].values", "column index"),
        (frame(GOOD, [one("x", "0", 1, 2)]), 400, "series[0].steps", "column index"),
        (frame(GOOD, [one("bad key!")]), 400, "series[0].key", ""),
        (frame([steps(0, -1), *GOOD[1:]], [one()]), 400, "series[0].steps", ">= 0"),
        (frame([*GOOD[:2], floats(1, math.nan)], [one()]), 400, "series[0].wall_times", "finite"),
        (frame([steps(0), *GOOD[1:]], [one()]), 400, "series[0]", "same length"),
        (frame(GOOD, {"x": 1}), 400, "series", "list"),  # type: ignore[arg-type]
        (frame(GOOD, [5]), 400, "series[0]", "object"),  # type: ignore[list-item]
        (
            _replace_header(
                frame(GOOD, [one()]), b'{"columns":[{"dtype":"f4","n":2}],"series":[]}'
            ),
            400,
            "columns[0]",
            '"i8" or "f8"',
        ),
        (
            _replace_header(
                frame(GOOD, [one()]), b'{"columns":[{"dtype":"f8","n":-1}],"series":[]}'
            ),
            400,
            "columns[0]",
            "integer >= 0",
        ),
        (frame(GOOD, [one()] * 1001), 413, "series", "1000 series"),
        (frame([floats()] * 3001, []), 413, "columns", "3000 columns"),
    ],
)
def test_malformed_bodies_are_refused_and_nothing_is_stored(
    api, tenants, run, raw, status, field, words
):
    before = Series.objects.filter(run=run).count()
    r = post(api(tenants.bob), run, raw, key="columns-bad-1")
    assert r.status_code == status, r.content
    error = r.json()["error"]
    assert error.get("field") == field and words in error["message"], error
    assert Series.objects.filter(run=run).count() == before == 0
    assert not IdempotencyRecord.objects.exists()


def test_too_many_points_is_413(api, tenants, run):
    n = 50_001
    cols = [np.arange(n, dtype=np.int64), np.zeros(n), np.zeros(n)]
    r = post(api(tenants.bob), run, frame(cols, [one("a"), one("b")]), gz=True)
    assert r.status_code == 413 and "100000 points" in r.json()["error"]["message"]
    assert not Series.objects.filter(run=run).exists()


def test_viewer_cannot_and_other_tenant_cannot_see(api, tenants, run):
    body = frame(GOOD, [one()])
    assert post(api(tenants.carol), run, body).status_code == 403
    assert post(api(tenants.mallory), run, body).status_code == 404
    assert not Series.objects.filter(run=run).exists()

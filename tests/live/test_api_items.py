"""POST /runs/{id}/text/, /histograms/, /pr-curves/: validation, upsert, replay, roles."""

from __future__ import annotations

from typing import Any

import pytest

from tracker.models import Histogram, IdempotencyRecord, PRCurve, TextEntry

pytestmark = pytest.mark.django_db


def post(client: Any, run: Any, kind: str, items: Any, key: str | None = None) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(f"/api/v1/runs/{run.pk}/{kind}/", {"items": items}, format="json", **headers)


HIST = {
    "key": "weights",
    "step": 3,
    "wall_time": 1.7e9,
    "bucket_limits": [-1.0, 0.0, 1.0],
    "bucket_counts": [2, 5, 1],
    "min": -0.9,
    "max": 0.8,
    "num": 8,
    "sum": 0.5,
    "sum_squares": 3.0,
}
PR = {
    "key": "pr",
    "step": 1,
    "wall_time": 1.7e9,
    "precision": [1.0, 0.5, "NaN"],
    "recall": [0.2, 0.6, 1.0],
    "thresholds": [0.0, 0.5, 1.0],
    "tp": [1, 3, 5],
    "fp": [0, 3, 0],
    "tn": [5, 2, 0],
    "fn": [4, 2, 0],
}


def test_text_upsert_and_replay(api, tenants, run):
    c = api(tenants.bob)
    items = [
        {"key": "notes", "step": 1, "value": "<b>hi</b>", "wall_time": 1.7e9},
        {"key": "notes", "step": 2, "value": "two"},
    ]
    r = post(c, run, "text", items, key="text-key-1")
    assert r.status_code == 200 and r.json() == {"stored": 2}
    assert post(c, run, "text", items, key="text-key-1")["Idempotent-Replayed"] == "true"
    r = post(c, run, "text", [{"key": "notes", "step": 2, "value": "TWO"}])
    assert r.status_code == 200
    rows = list(TextEntry.objects.filter(run=run).order_by("step").values_list("step", "value"))
    assert rows == [(1, "<b>hi</b>"), (2, "TWO")]


def test_repeated_step_in_one_batch_keeps_last(api, tenants, run):
    items = [{"key": "t", "step": 1, "value": "a"}, {"key": "t", "step": 1, "value": "b"}]
    assert post(api(tenants.bob), run, "text", items).status_code == 200
    assert list(TextEntry.objects.filter(run=run).values_list("value", flat=True)) == ["b"]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"key": "t", "step": -1, "value": "a"}, "items[1].step"),
        ({"key": "t", "step": 1.5, "value": "a"}, "items[1].step"),
        ({"key": "t", "step": 1, "value": 5}, "items[1].value"),
        ({"key": "t", "step": 1, "value": "a\x00b"}, "items[1].value"),
        ({"key": "t" * 300, "step": 1, "value": "a"}, "items[1].key"),
        ({"key": "t", "step": 1, "value": "a", "wall_time": "NaN"}, "items[1].wall_time"),
        ("x", "items[1]"),
    ],
)
def test_bad_text_stores_nothing(api, tenants, run, item, field):
    r = post(api(tenants.bob), run, "text", [{"key": "t", "step": 0, "value": "ok"}, item])
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert r.json()["error"]["message"]
    assert not TextEntry.objects.exists()


def test_histograms_round_trip_and_upsert(api, tenants, run):
    c = api(tenants.bob)
    assert post(c, run, "histograms", [HIST]).json() == {"stored": 1}
    h = Histogram.objects.get(run=run, key="weights", step=3)
    assert h.bucket_limits == [-1.0, 0.0, 1.0] and h.bucket_counts == [2.0, 5.0, 1.0]
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (-0.9, 0.8, 8.0, 0.5, 3.0)
    assert post(c, run, "histograms", [{**HIST, "bucket_counts": [0, 0, 9]}]).status_code == 200
    assert Histogram.objects.get(run=run).bucket_counts == [0.0, 0.0, 9.0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bucket_limits": [0.0, 1.0]}, "items[1]"),
        ({"bucket_limits": [1.0, 0.0, 2.0]}, "items[1].bucket_limits"),
        ({"bucket_counts": [1, -1, 1]}, "items[1].bucket_counts"),
        ({"bucket_counts": [1, "NaN", 1]}, "items[1].bucket_counts[1]"),
        ({"min": "inf"}, "items[1].min"),
        ({"bucket_limits": "nope"}, "items[1].bucket_limits"),
        ({"step": "3"}, "items[1].step"),
    ],
)
def test_bad_histograms_store_nothing(api, tenants, run, change, field):
    r = post(api(tenants.bob), run, "histograms", [HIST, {**HIST, "step": 4, **change}])
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert not Histogram.objects.exists()


def test_histogram_stats_may_be_nonfinite(api, tenants, run):
    item = {**HIST, "sum": "Infinity", "sum_squares": "NaN", "min": "-Infinity"}
    assert post(api(tenants.bob), run, "histograms", [item]).status_code == 200
    h = Histogram.objects.get(run=run)
    assert h.sum == float("inf") and h.min == float("-inf") and h.sum_squares != h.sum_squares


def test_pr_curves_round_trip(api, tenants, run):
    r = post(api(tenants.bob), run, "pr-curves", [PR])
    assert r.status_code == 200 and r.json() == {"stored": 1}
    data = PRCurve.objects.get(run=run, key="pr", step=1).data
    assert data["precision"] == [1.0, 0.5, None]
    assert data["tp"] == [1.0, 3.0, 5.0] and data["thresholds"] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tp": [1, 2]}, "items[0]"),
        ({"thresholds": [0.0, "Infinity", 1.0]}, "items[0].thresholds[1]"),
        ({"recall": [0.1, "x", 1.0]}, "items[0].recall[1]"),
        ({"fn": None}, "items[0].fn"),
    ],
)
def test_bad_pr_curves_store_nothing(api, tenants, run, change, field):
    r = post(api(tenants.bob), run, "pr-curves", [{**PR, **change}])
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field
    assert not PRCurve.objects.exists()


def test_oversized_item_batches(api, tenants, run):
    c = api(tenants.bob)
    many = [{**HIST, "step": i} for i in range(1001)]
    assert post(c, run, "histograms", many).status_code == 413
    big = {
        **HIST,
        "bucket_limits": [float(i) for i in range(10_001)],
        "bucket_counts": [1] * 10_001,
    }
    assert post(c, run, "histograms", [big]).status_code == 413
    assert not Histogram.objects.exists()


@pytest.mark.parametrize(
    ("kind", "item"),
    [("text", {"key": "t", "step": 0, "value": "v"}), ("histograms", HIST), ("pr-curves", PR)],
)
def test_roles(api, tenants, run, other_run, kind, item):
    assert post(api(tenants.carol), run, kind, [item]).status_code == 403
    assert post(api(tenants.mallory), run, kind, [item]).status_code == 404
    assert post(api(tenants.bob), other_run, kind, [item]).status_code == 404
    assert not IdempotencyRecord.objects.exists()
    assert post(api(tenants.bob), run, kind, [item]).status_code == 200

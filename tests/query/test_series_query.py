import math

import numpy as np
import pytest

from tests.factories import RunFactory
from tracker.models import Series, SeriesChunk
from tracker.selectors.series import decode_into, read_points
from tracker.selectors.series_query import minmax_indices, query_series
from tracker.services.errors import ServiceError
from tracker.services.metrics import CHUNK_TARGET, append_points
from tracker.services.series_codec import Points, decode, encode

from .conftest import put_series

N = 50_000


@pytest.fixture
def big(db):
    run = RunFactory()
    rng = np.random.default_rng(7)
    values = rng.normal(size=N)
    values[12_345] = 1e6  # one spike up
    values[33_333] = -1e6  # one spike down
    walls = 1.7e9 + np.arange(N) * 0.25
    pts = put_series(run, "loss", values, walls=walls)
    return run, pts


def test_decode_into_matches_codec():
    vals = np.array([0.5, np.nan, np.inf, -np.inf, -0.0, 1e308, 5e-324] * 300)
    pts = Points.of(
        np.cumsum(np.arange(len(vals)) % 3 + 1), 1.7e9 + np.arange(len(vals)) * 0.3, vals
    )
    blob = encode(pts)
    ref = decode(blob)
    s, w, v = np.empty(len(vals), np.int64), np.empty(len(vals)), np.empty(len(vals))
    assert decode_into(blob, s, w, v) == len(vals)
    assert s.tobytes() == ref.steps.tobytes()
    assert w.tobytes() == ref.walls.tobytes()
    assert v.tobytes() == ref.values.tobytes()


def test_spikes_survive_downsampling(big):
    run, pts = big
    [res] = query_series([run], ["loss"], max_points=1000)
    assert res["downsampled"] and res["count"] == N
    assert len(res["value"]) <= 1000
    assert 1e6 in res["value"] and -1e6 in res["value"]
    assert 12_345 in res["step"] and 33_333 in res["step"]
    assert np.all(np.diff(res["x"]) > 0)  # x strictly monotonic, order preserved
    # every returned point is a real stored point
    idx = np.asarray(res["step"])
    assert np.array_equal(np.asarray(res["value"]), pts.values[idx])
    assert np.allclose(res["wall"], pts.walls[idx])
    # per bucket, the extremes are those of the raw data in that bucket
    assert min(res["value"]) == pts.values.min() and max(res["value"]) == pts.values.max()


def test_exact_when_range_holds_few_points(big):
    run, pts = big
    [res] = query_series([run], ["loss"], max_points=1000, start=100, end=1099)
    assert not res["downsampled"] and res["count"] == 1000
    assert res["step"] == list(range(100, 1100))
    assert res["value"] == pts.values[100:1100].tolist()


def test_zoom_redownsamples_at_full_resolution(big):
    run, pts = big
    [overview] = query_series([run], ["loss"], max_points=100)
    [zoom] = query_series([run], ["loss"], max_points=100, start=20_000, end=20_999)
    assert zoom["downsampled"] and zoom["count"] == 1000
    assert zoom["step"][0] >= 20_000 and zoom["step"][-1] <= 20_999
    window = pts.values[20_000:21_000]
    assert window.max() in zoom["value"] and window.min() in zoom["value"]
    # the overview could not show this detail: fewer than 3 of its points are in the window
    assert sum(20_000 <= s <= 20_999 for s in overview["step"]) < 3


def test_zoom_reads_only_intersecting_chunks(big):
    run, _ = big
    series = Series.objects.get(run=run, key="loss")
    first = SeriesChunk.objects.filter(series=series).order_by("step_min").first()
    assert first.step_max < 20_000
    # damage a chunk outside the zoom: a query that read it would fail to decode
    SeriesChunk.objects.filter(pk=first.pk).update(data=b"\x01garbage")
    [zoom] = query_series([run], ["loss"], max_points=100, start=20_000, end=20_999)
    assert zoom["count"] == 1000
    wall0 = 1.7e9 + 20_000 * 0.25
    [zw] = query_series([run], ["loss"], x="wall", max_points=100, start=wall0, end=wall0 + 10)
    assert zw["count"] == 41
    with pytest.raises(Exception):  # noqa: B017 - the full range does read the damaged chunk
        query_series([run], ["loss"], max_points=100)


def test_x_wall_and_relative(big):
    run, pts = big
    [w] = query_series([run], ["loss"], x="wall", max_points=500)
    [r] = query_series([run], ["loss"], x="relative", max_points=500)
    assert w["step"] == r["step"]
    assert np.allclose(np.asarray(w["x"]) - pts.walls[0], r["x"])
    assert r["x"][0] >= 0.0 and np.all(np.diff(r["x"]) > 0)
    [head] = query_series([run], ["loss"], x="relative", end=1.0)
    assert head["x"] == [0.0, 0.25, 0.5, 0.75, 1.0] and head["step"] == [0, 1, 2, 3, 4]
    [z] = query_series([run], ["loss"], x="relative", start=10.0, end=20.0, max_points=500)
    assert z["step"] == list(range(40, 81)) and not z["downsampled"]


def test_wall_clock_going_backwards_keeps_x_monotonic(db):
    run = RunFactory()
    walls = np.array([10.0, 11.0, 12.0, 5.0, 6.0, 7.0]) + 1.7e9  # a restarted run
    put_series(run, "m", [1, 2, 3, 4, 5, 6], walls=walls)
    [res] = query_series([run], ["m"], x="wall")
    assert np.all(np.diff(res["x"]) >= 0)
    assert res["step"] == [3, 4, 5, 0, 1, 2]


def test_nonfinite_values_preserved(db):
    run = RunFactory()
    vals = np.linspace(0, 1, 5000)
    vals[100], vals[2000], vals[4000] = np.nan, np.inf, -np.inf
    put_series(run, "g", vals)
    [exact] = query_series([run], ["g"], max_points=5000)
    assert math.isnan(exact["value"][100]) and exact["value"][2000] == math.inf
    [ds] = query_series([run], ["g"], max_points=300)
    assert len(ds["value"]) <= 300
    got = dict(zip(ds["step"], ds["value"], strict=True))
    assert math.isnan(got[100]) and got[2000] == math.inf and got[4000] == -math.inf


def test_all_nan_bucket_keeps_a_point():
    xs = np.arange(1000)
    v = np.full(1000, np.nan)
    v[:10] = 1.0
    idx = minmax_indices(xs, v, 30)
    assert len(idx) <= 30 and np.all(np.diff(idx) > 0)
    assert np.isnan(v[idx]).sum() >= 9  # every all-NaN bucket still shows its NaN


def test_uneven_steps_use_equal_width_buckets():
    xs = np.concatenate([np.arange(0, 100), np.arange(10_000, 10_100)])
    v = np.sin(xs / 7.0)
    idx = minmax_indices(xs, v, 20)
    assert len(idx) <= 20 and np.all(np.diff(idx) > 0)
    assert set(xs[idx]) & set(range(100)) and set(xs[idx]) & set(range(10_000, 10_100))


def test_multi_run_and_missing_series(db):
    a, b = RunFactory(), RunFactory()
    put_series(a, "x", [1, 2, 3])
    put_series(b, "x", [4, 5])
    put_series(b, "y", [6])
    res = query_series([b, a], ["y", "x", "nope"])
    assert [(r["run"], r["key"]) for r in res] == [(b.pk, "y"), (b.pk, "x"), (a.pk, "x")]


def test_appended_and_overwritten_points_are_read_back(db):
    run = RunFactory()
    n = CHUNK_TARGET * 2 + 5
    put_series(run, "m", np.arange(n, dtype=float))
    append_points(run, {"m": Points.of([3, n + 1], [1.0, 2.0], [-3.0, 99.0])})
    [res] = query_series([run], ["m"], max_points=200_000)
    ref = read_points(Series.objects.get(run=run, key="m"))
    assert res["step"] == ref.steps.tolist() and res["value"] == ref.values.tolist()
    assert res["value"][3] == -3.0 and res["count"] == n + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_points": 1},
        {"max_points": 10**9},
        {"x": "time"},
        {"start": 5, "end": 1},
        {"start": float("nan")},
        {"end": float("inf")},
    ],
)
def test_bad_query_arguments(db, kwargs):
    run = RunFactory()
    with pytest.raises(ServiceError):
        query_series([run], ["m"], **kwargs)


def test_huge_zoom_bounds_do_not_overflow(db):
    run = RunFactory()
    put_series(run, "m", [1.0, 2.0])
    [res] = query_series([run], ["m"], start=-1e300, end=1e300)
    assert res["count"] == 2


def test_level_of_detail_path_keeps_spikes_and_counts(db):
    from django.core.cache import cache

    from tracker.selectors import series_query as sq

    run = RunFactory()
    n = 30_000  # >= LOD_FACTOR * max_points(100): chunks are read from their summaries
    rng = np.random.default_rng(11)
    vals = rng.normal(size=n)
    vals[17_001] = 500.0
    vals[2_222] = -500.0
    vals[29_000] = np.nan
    put_series(run, "m", vals)
    series = Series.objects.get(run=run, key="m")
    metas = list(SeriesChunk.objects.filter(series=series).values_list(*sq._META))
    assert all(cache.get(sq._lod_key(m)) is None for m in metas)
    [cold] = query_series([run], ["m"], max_points=100)
    assert all(cache.get(sq._lod_key(m)) is not None for m in metas)  # summaries were kept
    [warm] = query_series([run], ["m"], max_points=100)
    assert cold["step"] == warm["step"] and cold["count"] == warm["count"]
    assert warm["downsampled"] and warm["count"] == n and len(warm["step"]) <= 100
    got = dict(zip(warm["step"], warm["value"], strict=True))
    assert got[17_001] == 500.0 and got[2_222] == -500.0 and math.isnan(got[29_000])
    assert np.all(np.diff(warm["step"]) > 0)
    idx = np.asarray(warm["step"])
    assert np.array_equal(np.asarray(warm["value"]), vals[idx], equal_nan=True)
    # a zoom cutting chunks in the middle: edge chunks raw, the count stays exact
    [zoom] = query_series([run], ["m"], max_points=20, start=100, end=29_899)
    assert zoom["count"] == 29_800 and 17_001 in zoom["step"]
    # appending grows the tail chunk: its summary key changes, new points show at once
    append_points(run, {"m": Points.of([n], [1.8e9], [900.0])})
    [after] = query_series([run], ["m"], max_points=100)
    assert after["count"] == n + 1 and n in after["step"]


@pytest.mark.django_db(transaction=True)
def test_chart_query_while_a_live_writer_replaces_the_tail_chunk(tenants):
    """Found by the 5-minute load run: the chunk list and the chunk bytes are two queries, and
    a batch landing in between replaced the tail chunk (KeyError → 500). Every read must
    return a consistent prefix of what was written."""
    import threading

    from django.db import connection

    from tracker.selectors.series_query import query_series_arrays

    run = RunFactory(project=tenants.vision)
    n0 = 5000
    append_points(run, {"loss": Points.of(list(range(n0)), [1.0] * n0, [0.5] * n0)})
    stop = threading.Event()

    def writer() -> None:
        step = n0
        try:
            while not stop.is_set():
                append_points(run, {"loss": Points.of([step], [2.0], [float(step)])})
                step += 1
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = n0
        for _ in range(400):
            (series,) = query_series_arrays([run], ["loss"], max_points=200_000)
            steps = series.step
            count = len(steps)
            assert count >= seen and list(steps[:3]) == [0, 1, 2]
            assert int(steps[-1]) == count - 1  # no gap, nothing twice
            seen = count
    finally:
        stop.set()
        thread.join(30)
    assert seen > n0  # the writer really wrote while we read

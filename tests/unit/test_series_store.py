import math

import numpy as np
import pytest

from tests.factories import RunFactory
from tracker.models import Series, SeriesChunk
from tracker.selectors.series import read_points
from tracker.services import metrics
from tracker.services.series_codec import Points, decode, encode


def test_codec_is_bit_exact_with_nonfinite():
    values = np.array([0.5, np.nan, np.inf, -np.inf, -0.0, 1e308, 5e-324])
    pts = Points.of([0, 1, 2, 5, 9, 10, 2**40], [1.7e9 + i * 0.25 for i in range(7)], values)
    back = decode(encode(pts))
    assert back.steps.tolist() == pts.steps.tolist()
    assert back.values.tobytes() == pts.values.tobytes()
    assert np.allclose(back.walls, pts.walls, atol=1e-6, rtol=0)


def test_normalized_keeps_last_of_repeated_step():
    pts = Points.of([3, 1, 3, 2], [0, 0, 0, 0], [30.0, 10.0, 31.0, 20.0]).normalized()
    assert pts.steps.tolist() == [1, 2, 3]
    assert pts.values.tolist() == [10.0, 20.0, 31.0]


@pytest.mark.django_db
def test_append_merge_overlap_and_summary():
    run = RunFactory()
    n = metrics.CHUNK_TARGET + 100
    steps = np.arange(n)
    metrics.append_points(run, {"loss": Points.of(steps, steps * 0.1 + 1.7e9, steps.astype(float))})
    s = Series.objects.get(run=run, key="loss")
    assert (s.count, s.first_step, s.last_step, s.min_value, s.max_value) == (
        n,
        0,
        n - 1,
        0.0,
        n - 1.0,
    )
    # small appends extend the tail chunk instead of adding rows
    for i in range(5):
        metrics.append_points(run, {"loss": Points.of([n + i], [1.8e9], [float("nan")])})
    assert SeriesChunk.objects.filter(series=s).count() == 2
    # an overwrite inside stored steps replaces values, never duplicates
    metrics.append_points(run, {"loss": Points.of([5, 6, n + 2], [1.9e9] * 3, [-1.0, -2.0, 7.0])})
    s.refresh_from_db()
    pts = read_points(s)
    assert len(pts) == n + 5 == s.count
    assert pts.values[5] == -1.0 and pts.values[6] == -2.0 and pts.values[n + 2] == 7.0
    assert math.isnan(pts.values[n + 4]) and math.isnan(s.last_value)
    assert s.min_value == -2.0
    assert np.all(np.diff(pts.steps) > 0)
    assert read_points(s, start=10, end=12).steps.tolist() == [10, 11, 12]


@pytest.mark.django_db
def test_sys_keys_are_system_series_and_purge():
    run = RunFactory()
    metrics.append_points(
        run,
        {
            "sys/cpu_percent": Points.of([0, 1], [1.0, 2.0], [3.0, 4.0]),
            "acc": Points.of(range(10), range(10), range(10)),
        },
    )
    assert Series.objects.get(run=run, key="sys/cpu_percent").kind == "system"
    metrics.delete_points_from(run, "acc", 4)
    s = Series.objects.get(run=run, key="acc")
    assert read_points(s).steps.tolist() == [0, 1, 2, 3]
    assert (s.count, s.last_step, s.last_value) == (4, 3, 3.0)


@pytest.mark.django_db
def test_summaries_of_many_series_in_one_batch():
    """More series than one summary UPDATE takes (1,000): every row gets its own figures,
    NaN-only and single-point series included."""
    run = RunFactory()
    data = {
        f"k{i:04d}": Points.of([0, 1], [1.7e9, 1.7e9 + 1], [float(i), float(-i)])
        for i in range(1200)
    }
    data["nan"] = Points.of([5], [1.7e9], [math.nan])
    metrics.append_points(run, data)
    metrics.append_points(run, {"k0007": Points.of([2], [1.7e9 + 2], [100.0])})
    rows = {s.key: s for s in Series.objects.filter(run=run)}
    assert len(rows) == 1201
    k = rows["k1199"]
    assert (k.count, k.first_step, k.last_step, k.last_value) == (2, 0, 1, -1199.0)
    assert (k.min_value, k.max_value, k.first_wall, k.last_wall) == (
        -1199.0,
        1199.0,
        1.7e9,
        1.7e9 + 1,
    )
    k = rows["k0007"]
    assert (k.count, k.last_step, k.last_value, k.max_value, k.last_wall) == (
        3, 2, 100.0, 100.0, 1.7e9 + 2
    )  # fmt: skip
    nan = rows["nan"]
    assert (nan.count, nan.min_value, nan.max_value) == (1, None, None)
    assert math.isnan(nan.last_value)

"""Chunks encoded by several threads at once (gunicorn gthread workers) decode exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tracker.services.series_codec import Points, decode, encode


def test_concurrent_encode_decode_round_trips():
    rng = np.random.default_rng(0)
    batches = [
        Points.of(np.arange(20_000) + i, 1.7e9 + np.arange(20_000) * 0.01, rng.random(20_000))
        for i in range(16)
    ]

    def round_trip(p: Points) -> bool:
        for _ in range(20):
            got = decode(encode(p))
            if not (np.array_equal(got.steps, p.steps) and np.array_equal(got.values, p.values)):
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, batches))

"""Reading scalar series back from their chunks."""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from ..models import Series, SeriesChunk
from ..services.series_codec import _HEADER, VERSION, Points, decode

# zstd decompressor objects must not be shared between threads (gunicorn gthread workers).
_local = threading.local()


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def read_points(series: Series, start: int | None = None, end: int | None = None) -> Points:
    """All points of a series (optionally with start <= step <= end), sorted by step."""
    qs = SeriesChunk.objects.filter(series=series)
    if start is not None:
        qs = qs.filter(step_max__gte=start)
    if end is not None:
        qs = qs.filter(step_min__lte=end)
    parts = [decode(bytes(d)) for d in qs.order_by("step_min").values_list("data", flat=True)]
    pts = Points.concat(parts)
    if len(pts) and (start is not None or end is not None):
        mask = True
        if start is not None:
            mask = pts.steps >= start
        if end is not None:
            mask = mask & (pts.steps <= end)
        pts = Points(pts.steps[mask], pts.walls[mask], pts.values[mask])
    return pts


def decode_into(
    blob: bytes | memoryview,
    steps: np.ndarray,
    walls: np.ndarray,
    values: np.ndarray,
    scratch: np.ndarray | None = None,
) -> int:
    """Decode one chunk straight into slices of preallocated output arrays; returns its count.

    Same result as series_codec.decode (tests compare them), about twice as fast for reads of
    many chunks: no intermediate arrays and no final concatenation, and the byte-plane
    unshuffle copies plane by plane (contiguous reads) instead of a strided transpose.
    """
    version, n = _HEADER.unpack_from(blob, 0)
    if version != VERSION:
        raise ValueError(f"unknown chunk version {version}")
    body = _dctx().decompress(memoryview(blob)[_HEADER.size :], max_output_size=24 * n)
    planes = np.frombuffer(body, dtype=np.uint8).reshape(3, 8, n)
    s = steps[:n]
    _unshuffle_into(planes[0], s.view(np.uint8).reshape(n, 8))
    np.cumsum(s, out=s)
    w = scratch[:n] if scratch is not None and scratch.shape[0] >= n else np.empty(n, np.int64)
    _unshuffle_into(planes[1], w.view(np.uint8).reshape(n, 8))
    np.cumsum(w, out=w)
    np.divide(w, 1e6, out=walls[:n])
    _unshuffle_into(planes[2], values[:n].view(np.uint8).reshape(n, 8))
    return int(n)


def _unshuffle_into(planes: np.ndarray, out: np.ndarray) -> None:
    for k in range(8):
        out[:, k] = planes[k]

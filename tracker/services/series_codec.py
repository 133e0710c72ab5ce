"""Packing of scalar points into compressed chunks.

Layout (version 1): a 9-byte header (version, count as uint64) then one zstd frame holding, in
order: the step deltas (int64), the wall times as microsecond deltas (int64) and the values
(float64, bit-exact, NaN payloads and infinities kept), each array byte-shuffled so that the
compressor sees the slowly-changing high bytes together. Steps and wall times compress to a
few bits; values cost what their entropy costs. Wall-clock precision is one microsecond.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

VERSION = 1
_HEADER = struct.Struct("<BQ")
# zstandard (de)compressor objects are not thread-safe: one shared by the threads of a gunicorn
# gthread worker wrote corrupt chunks under concurrent batches. One pair per thread.
_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=3)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


@dataclass
class Points:
    """Columnar points of one series, sorted by step with unique steps once normalized."""

    steps: np.ndarray  # int64
    walls: np.ndarray  # float64 seconds since epoch
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @classmethod
    def empty(cls) -> Points:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    @classmethod
    def of(cls, steps, walls, values) -> Points:  # type: ignore[no-untyped-def]
        return cls(
            np.asarray(steps, dtype=np.int64),
            np.asarray(walls, dtype=np.float64),
            np.asarray(values, dtype=np.float64),
        )

    def slice(self, start: int, stop: int) -> Points:
        return Points(self.steps[start:stop], self.walls[start:stop], self.values[start:stop])

    def normalized(self) -> Points:
        """Sort by step; for repeated steps keep the last written point (upsert semantics)."""
        n = len(self)
        if n == 0:
            return self
        steps = self.steps
        if n == 1 or bool(np.all(steps[1:] > steps[:-1])):
            return self
        order = np.argsort(steps, kind="stable")
        s = steps[order]
        keep = np.ones(n, dtype=bool)
        keep[:-1] = s[1:] != s[:-1]  # last of each run of equal steps wins
        idx = order[keep]
        return Points(self.steps[idx], self.walls[idx], self.values[idx])

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        if not parts:
            return Points.empty()
        if len(parts) == 1:
            return parts[0]
        return Points(
            np.concatenate([p.steps for p in parts]),
            np.concatenate([p.walls for p in parts]),
            np.concatenate([p.values for p in parts]),
        )


def _shuffle(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, 8).T).tobytes()


def _unshuffle(buf: bytes, n: int, dtype: type) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8).reshape(8, n).T.copy().view(dtype).reshape(n)


def encode(points: Points) -> bytes:
    n = len(points)
    steps = points.steps.astype(np.int64, copy=False)
    dsteps = np.empty(n, np.int64)
    if n:
        dsteps[0] = steps[0]
        np.subtract(steps[1:], steps[:-1], out=dsteps[1:])
    micros = np.rint(points.walls * 1e6).astype(np.int64)
    dwall = np.empty(n, np.int64)
    if n:
        dwall[0] = micros[0]
        np.subtract(micros[1:], micros[:-1], out=dwall[1:])
    body = (
        _shuffle(dsteps) + _shuffle(dwall) + _shuffle(points.values.astype(np.float64, copy=False))
    )
    return _HEADER.pack(VERSION, n) + _cctx().compress(body)


def decode(blob: bytes | memoryview) -> Points:
    version, n = _HEADER.unpack_from(blob, 0)
    if version != VERSION:
        raise ValueError(f"unknown chunk version {version}")
    body = _dctx().decompress(bytes(blob[_HEADER.size :]), max_output_size=24 * n)
    w = 8 * n
    steps = np.cumsum(_unshuffle(body[:w], n, np.int64))
    walls = np.cumsum(_unshuffle(body[w : 2 * w], n, np.int64)).astype(np.float64) / 1e6
    values = _unshuffle(body[2 * w : 3 * w], n, np.float64)
    return Points(steps, walls, values)

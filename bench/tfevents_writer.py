"""A fast writer of scalar tfevents files: the exact bytes tensorboardX/torch write for
`add_scalar`, built directly from the TFRecord framing (no protobuf objects, no TensorFlow).

Used by the benchmarks and the upload tests to make big logdirs quickly. Django-free.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from tracker.ingest.tfevents import frame_record


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def scalar_event(wall: float, step: int, tag: bytes, value: float) -> bytes:
    """Event{wall_time, step, summary{value{tag, simple_value}}} as protobuf writes it."""
    val = b"\x0a" + _varint(len(tag)) + tag + b"\x15" + struct.pack("<f", value)
    summ = b"\x0a" + _varint(len(val)) + val
    head = b"\x09" + struct.pack("<d", wall) + (b"\x10" + _varint(step) if step else b"")
    return head + b"\x2a" + _varint(len(summ)) + summ


def file_version_event(wall: float) -> bytes:
    """Event{wall_time, file_version: "brain.Event:2"}: the first event of every file."""
    v = b"brain.Event:2"
    return b"\x09" + struct.pack("<d", wall) + b"\x1a" + _varint(len(v)) + v


def write_scalar_file(
    path: Path,
    steps: int,
    tags: Sequence[bytes],
    value: Callable[[int, int], float],
    wall: Callable[[int], float] = lambda step: 1.7e9 + step * 0.05,
) -> int:
    """Write one tfevents file: the file_version event at `wall(0)`, then for every step
    0..steps-1 one scalar event per tag, `value(step, tag_index)` at `wall(step)`.

    Returns the number of scalar points written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(frame_record(file_version_event(wall(0))))
        buf: list[bytes] = []
        for step in range(steps):
            w = wall(step)
            for t, tag in enumerate(tags):
                buf.append(frame_record(scalar_event(w, step, tag, value(step, t))))
            if len(buf) > 50_000:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return steps * len(tags)

"""Benchmark: how fast do we turn a tfevents file of scalar events into columns?

Generates (with our own protos; TensorFlow is not needed) a tfevents file of N scalar
events and times, best of ``--repeat`` runs, on one core:

  (a) reference loop: framing only (length + payload slicing, no CRC checks)
  (b) ``RecordReader.batches()``: framing + both masked CRC32C checks
  (c) (b) + ``SummaryDecoder.decode_records()``: full parse to columnar scalars
  (d) for comparison: (b) + ``Event.FromString`` and the protobuf object API per event
      (what (c) would cost without its byte-layout fast path)

Usage::

    .venv/bin/python bench/parse_tfevents.py [--events 1000000] [--layout simple|tf2]
        [--tags 8] [--repeat 3] [--profile]

``--layout simple`` writes ``simple_value`` events (torch, tensorboardX, TF1);
``--layout tf2`` writes rank-0 float tensors with "scalars" metadata (TF2 / Keras).
``--profile`` runs (c) once under pyinstrument (installed with the test extras).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.ingest.proto import event_pb2, types_pb2  # noqa: E402
from tracker.ingest.summaries import SummaryDecoder  # noqa: E402
from tracker.ingest.tfevents import RecordReader, frame_record  # noqa: E402

_HDR = struct.Struct("<Q").unpack_from


def generate(path: Path, n: int, layout: str, tags: int) -> None:
    """Write ``n`` scalar events (+ the file_version header event) to ``path``."""
    ev = event_pb2.Event(wall_time=1_700_000_000.0, file_version="brain.Event:2")
    parts = [frame_record(ev.SerializeToString())]
    tag_names = [f"train/metric_{i}" for i in range(tags)]
    proto = event_pb2.Event()
    value = proto.summary.value.add()
    if layout == "tf2":
        value.metadata.plugin_data.plugin_name = "scalars"
        value.tensor.dtype = types_pb2.DT_FLOAT
        value.tensor.tensor_shape.SetInParent()
    pack_f = struct.Struct("<f").pack
    for i in range(n):
        proto.step = i // tags + 1
        proto.wall_time = 1_700_000_000.0 + i * 0.001
        value.tag = tag_names[i % tags]
        if layout == "tf2":
            value.tensor.tensor_content = pack_f(1.0 / (i + 1))
        else:
            value.simple_value = 1.0 / (i + 1)
        parts.append(frame_record(proto.SerializeToString()))
    path.write_bytes(b"".join(parts))


def framing_only(path: Path) -> int:
    """(a) Length + payload slicing over the whole file, no CRC: the floor for any reader."""
    with open(path, "rb") as f:
        buf = f.read()
    pos, n, count = 0, len(buf), 0
    payloads = []
    add = payloads.append
    while pos + 12 <= n:
        (length,) = _HDR(buf, pos)
        end = pos + 12 + length
        add(buf[pos + 12 : end])
        pos = end + 4
        count += 1
    return count


def framing_crc(path: Path) -> int:
    with open(path, "rb") as f:
        reader = RecordReader(f)
        count = sum(len(b) for b in reader.batches())
    assert not reader.problems
    return count


def full_parse(path: Path) -> int:
    decoder = SummaryDecoder()
    count = 0
    with open(path, "rb") as f:
        for batch in RecordReader(f).batches():
            out = decoder.decode_records(batch)
            count += len(out.scalar_values) + len(out.items)
    return count


def protobuf_api(path: Path) -> int:
    parse = event_pb2.Event.FromString
    cols: tuple[list, list, list, list] = ([], [], [], [])
    with open(path, "rb") as f:
        for batch in RecordReader(f).batches():
            for p in batch.payloads:
                ev = parse(p)
                for v in ev.summary.value:
                    cols[0].append(v.tag)
                    cols[1].append(ev.step)
                    cols[2].append(ev.wall_time)
                    cols[3].append(v.simple_value)
    return len(cols[0])


def best_of(fn: Callable[[Path], int], path: Path, repeat: int) -> tuple[int, float, float]:
    """Best wall time and best CPU time (process_time: per-core cost even on a busy host)."""
    best_wall = best_cpu = float("inf")
    count = 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        count = fn(path)
        best_cpu = min(best_cpu, time.process_time() - c)
        best_wall = min(best_wall, time.perf_counter() - t)
    return count, best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--layout", choices=["simple", "tf2"], default="simple")
    ap.add_argument("--tags", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file", type=Path, help="reuse/keep the generated file here")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    tmpdir = None
    path = args.file
    if path is None:
        tmpdir = tempfile.TemporaryDirectory()
        path = Path(tmpdir.name) / "events.out.tfevents.bench"
    if not path.exists():
        t = time.perf_counter()
        generate(path, args.events, args.layout, args.tags)
        print(
            f"generated {args.events:,} {args.layout} events, {path.stat().st_size:,} bytes "
            f"in {time.perf_counter() - t:.1f}s"
        )
    size = path.stat().st_size

    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as prof:
            full_parse(path)
        prof.print()
        return

    rows = [
        ("(a) framing only, no CRC", framing_only, args.repeat),
        ("(b) framing + both CRCs", framing_crc, args.repeat),
        ("(c) full parse to columnar scalars", full_parse, args.repeat),
        ("(d) (b) + protobuf object API", protobuf_api, 1),
    ]
    print(f"\nfile: {size / 1e6:.1f} MB, python {sys.version.split()[0]}, pid {os.getpid()}")
    print("rates use the CPU time of this process (one core); wall time for reference")
    print(f"{'step':<38}{'events':>11}{'wall s':>8}{'cpu s':>8}{'events/s':>12}{'µs/event':>10}")
    for name, fn, repeat in rows:
        count, wall, cpu = best_of(fn, path, repeat)
        print(
            f"{name:<38}{count:>11,}{wall:>8.3f}{cpu:>8.3f}"
            f"{count / cpu:>12,.0f}{cpu / count * 1e6:>10.2f}"
        )
    if tmpdir is not None:
        tmpdir.cleanup()


if __name__ == "__main__":
    main()

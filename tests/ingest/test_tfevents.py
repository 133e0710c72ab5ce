"""TFRecord framing: damage, resync, resume and fuzz tests with exact expectations."""

from __future__ import annotations

import io
import random
import struct
import time

import pytest

from tracker.ingest.proto import event_pb2
from tracker.ingest.tfevents import (
    EventReader,
    Problem,
    RecordReader,
    frame_record,
    masked_crc32c,
    read_events,
)


def payloads(n: int, size: int = 0) -> list[bytes]:
    out = []
    for i in range(n):
        ev = event_pb2.Event(wall_time=1000.0 + i, step=i)
        ev.summary.value.add(tag=f"t{i % 3}", simple_value=i / 7)
        if size:
            ev.summary.value.add(tag="pad").image.encoded_image_string = bytes([i % 251]) * size
        out.append(ev.SerializeToString())
    return out


def frames(ps: list[bytes]) -> list[bytes]:
    return [frame_record(p) for p in ps]


def read_all(data, **kw) -> tuple[list[tuple[int, int, bytes]], RecordReader]:
    r = RecordReader(data, **kw)
    return list(r), r


def test_masked_crc_known_value():
    # Value from TensorFlow's crc32c_test / TFRecord writer for an empty payload.
    assert masked_crc32c(b"") == 0xA282EAD8
    header = struct.pack("<Q", 0)
    assert frame_record(b"") == header + struct.pack("<I", masked_crc32c(header)) + struct.pack(
        "<I", 0xA282EAD8
    )


def test_matches_tensorboard_reader(tmp_path):
    """Our framing == tensorboard's own record reader on a file written by torch."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path))
    for i in range(50):
        w.add_scalar("x", i, i)
    w.close()
    (path,) = tmp_path.iterdir()
    theirs = list(RawEventFileLoader(str(path)).Load())
    ours, r = read_all(path.read_bytes())
    assert [p for _, _, p in ours] == theirs
    assert r.complete_offset == path.stat().st_size and r.problems == []


def test_offsets_and_sources():
    ps = payloads(20)
    data = b"".join(frames(ps))
    expected = []
    pos = 0
    for p in ps:
        expected.append((pos, pos + len(p) + 16, p))
        pos += len(p) + 16
    for source in (
        data,
        bytearray(data),
        memoryview(data),
        io.BytesIO(data),
        iter([data[i : i + 7] for i in range(0, len(data), 7)]),
    ):
        got, r = read_all(source, block_size=13)
        assert got == expected
        assert r.complete_offset == len(data) and r.end_offset == len(data)
        assert r.problems == [] and r.pending_problem is None and r.records == 20
    batches = list(RecordReader(data, block_size=64).batches())
    assert sum(len(b) for b in batches) == 20
    assert [e for b in batches for e in b.ends] == [e for _, e, _ in expected]
    assert batches[-1].complete_offset == len(data)


def test_start_offset_seekable_and_bytes():
    ps = payloads(10)
    fs = frames(ps)
    data = b"".join(fs)
    start = len(fs[0]) + len(fs[1])
    got, r = read_all(io.BytesIO(data), start_offset=start)
    assert [p for _, _, p in got] == ps[2:]
    assert got[0][0] == start
    got2, _ = read_all(data, start_offset=start)
    assert got2 == got
    # A non-seekable source must already be positioned: offsets are still absolute.
    got3, _ = read_all(iter([data[start:]]), start_offset=start)
    assert got3 == got


def test_bad_length_crc_resyncs():
    ps = payloads(10)
    fs = frames(ps)
    bad = bytearray(fs[4])
    bad[9] ^= 0xFF  # length CRC
    data = b"".join(fs[:4]) + bytes(bad) + b"".join(fs[5:])
    got, r = read_all(data)
    assert [p for _, _, p in got] == ps[:4] + ps[5:]
    off = sum(map(len, fs[:4]))
    assert r.problems == [Problem(off, "bad_length_crc", r.problems[0].message)]
    assert f"skipped {len(fs[4])} bytes" in r.problems[0].message
    assert r.complete_offset == len(data)


def test_bad_payload_crc_skips_one_record():
    ps = payloads(10)
    fs = frames(ps)
    bad = bytearray(fs[3])
    bad[20] ^= 0x01
    data = b"".join(fs[:3]) + bytes(bad) + b"".join(fs[4:])
    got, r = read_all(data)
    assert [p for _, _, p in got] == ps[:3] + ps[4:]
    assert [(p.offset, p.kind) for p in r.problems] == [(sum(map(len, fs[:3])), "bad_payload_crc")]


def test_impossible_length_is_not_allocated():
    ps = payloads(5)
    fs = frames(ps)
    header = struct.pack("<Q", 1 << 60)
    huge = header + struct.pack("<I", masked_crc32c(header)) + b"x" * 10
    data = b"".join(fs[:2]) + huge + b"".join(fs[2:])
    t = time.perf_counter()
    got, r = read_all(data)
    assert time.perf_counter() - t < 1
    assert [p for _, _, p in got] == ps
    assert [(p.offset, p.kind) for p in r.problems] == [(sum(map(len, fs[:2])), "length_too_large")]
    # A configurable bound.
    got, r = read_all(b"".join(frames(payloads(3, size=100))), max_record_bytes=50)
    assert got == [] and r.pending_problem is not None


def test_garbage_between_records():
    ps = payloads(30)
    fs = frames(ps)
    rng = random.Random(1)
    parts = []
    expected_problem_offsets = []
    pos = 0
    for i, f in enumerate(fs):
        if i in (5, 6, 17):
            g = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            expected_problem_offsets.append(pos)
            parts.append(g)
            pos += len(g)
        parts.append(f)
        pos += len(f)
    data = b"".join(parts)
    got, r = read_all(data, block_size=50)
    assert [p for _, _, p in got] == ps
    assert [p.offset for p in r.problems] == expected_problem_offsets
    assert r.complete_offset == len(data)


def test_zero_runs_are_skipped_fast():
    ps = payloads(3)
    data = frame_record(ps[0]) + b"\x00" * (8 << 20) + frame_record(ps[1]) + frame_record(ps[2])
    t = time.perf_counter()
    got, r = read_all(data)
    assert time.perf_counter() - t < 2
    assert [p for _, _, p in got] == ps
    assert [(p.offset, p.kind) for p in r.problems] == [
        (len(frame_record(ps[0])), "bad_length_crc")
    ]


def test_text_file_named_like_tfevents(tmp_path):
    path = tmp_path / "events.out.tfevents.x"
    path.write_text("this is not a tfevents file\n" * 1000)
    with open(path, "rb") as fh:
        got, r = read_all(fh)
    assert got == [] and r.problems == []
    assert r.pending_problem is not None and r.pending_problem.kind == "not_tfevents"
    assert r.complete_offset == 0
    with open(path, "rb") as fh:
        got, r = read_all(fh, final=True)
    assert got == []
    assert [(p.offset, p.kind) for p in r.problems] == [(0, "not_tfevents")]
    assert r.complete_offset == path.stat().st_size


def test_empty_file():
    for final in (False, True):
        got, r = read_all(b"", final=final)
        assert got == [] and r.problems == [] and r.complete_offset == 0
        assert r.pending_problem is None


def test_truncated_tail_resumes_exactly_once():
    ps = payloads(8)
    data = b"".join(frames(ps))
    for cut in range(len(data) - 40, len(data)):
        got1, r1 = read_all(data[:cut])
        assert r1.problems == [] and r1.pending_problem is None
        # The tail is pending: complete_offset is the start of the incomplete record.
        assert r1.complete_offset == got1[-1][1]
        got2, r2 = read_all(data, start_offset=r1.complete_offset)
        assert [p for _, _, p in got1 + got2] == ps
        assert r2.complete_offset == len(data)
    # With final=True the incomplete tail is reported and consumed.
    got, r = read_all(data[:-3], final=True)
    assert [p.kind for p in r.problems] == ["truncated"]
    assert r.complete_offset == len(data) - 3


def test_pending_damage_reported_once_across_resumes():
    ps = payloads(6)
    fs = frames(ps)
    garbage = b"\x01garbage\x02" * 5
    data = b"".join(fs[:3]) + garbage + b"".join(fs[3:])
    damage_at = sum(map(len, fs[:3]))
    # Cut inside the garbage: the damage is pending, not reported.
    got1, r1 = read_all(data[: damage_at + 20])
    assert [p for _, _, p in got1] == ps[:3]
    assert r1.problems == [] and r1.pending_problem.offset == damage_at
    assert r1.complete_offset == damage_at
    # Resume with the rest: reported exactly once, all records exactly once.
    got2, r2 = read_all(data, start_offset=r1.complete_offset)
    assert [p for _, _, p in got2] == ps[3:]
    assert [(p.offset, p.kind) for p in r2.problems] == [(damage_at, "bad_length_crc")]


def test_any_chunk_split_and_resume_points_give_one_pass_result():
    rng = random.Random(7)
    ps = payloads(40, size=0) + payloads(5, size=3000)
    fs = frames(ps)
    parts = []
    for i, f in enumerate(fs):
        parts.append(f)
        if i in (10, 30):
            parts.append(b"\xde\xad\xbe\xef" * 9)
        if i == 20:
            parts.append(f[:-1] + bytes([f[-1] ^ 1]))  # a copy with a bad payload CRC
    data = b"".join(parts)
    ref, ref_r = read_all(data)
    for trial in range(30):
        # Random chunking of a single pass.
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 40)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        got, r = read_all(iter(chunks), block_size=rng.choice([1, 17, 4096]))
        assert got == ref and r.problems == ref_r.problems
        # Incremental "file growing" reads resuming at complete_offset.
        seen, problems, offset = [], [], 0
        for end in [*cuts, len(data)]:
            g, rr = read_all(data[:end], start_offset=offset)
            seen += g
            problems += rr.problems
            offset = rr.complete_offset
        assert seen == ref, trial
        assert problems == ref_r.problems
        assert offset == len(data)


def test_fuzz_random_bytes_never_raise_or_hang():
    rng = random.Random(12345)
    valid = b"".join(frames(payloads(20)))
    t0 = time.perf_counter()
    for i in range(300):
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 5000))
        elif kind == 1:  # bit flips in a valid stream
            b = bytearray(valid)
            for _ in range(rng.randrange(1, 20)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        else:  # spliced fragments
            data = b"".join(
                valid[a : a + rng.randrange(1, 200)]
                for a in (rng.randrange(len(valid)) for _ in range(10))
            )
        for final in (False, True):
            r = RecordReader(data, final=final, block_size=rng.choice([7, 512, 1 << 20]))
            got = list(r)
            assert all(0 <= s < e <= len(data) for s, e, _ in got)
            assert r.complete_offset <= len(data)
            if final:
                assert r.complete_offset == len(data)
            for s, e, p in got:
                assert data[s + 12 : e - 4] == p
        ev = EventReader(data)
        for _, _, event in ev:
            assert isinstance(event, event_pb2.Event)
    assert time.perf_counter() - t0 < 30


def test_event_reader_reports_bad_events():
    good = payloads(3)
    data = b"".join(frames([good[0], b"\xff\xff\xff", good[1]]))
    ev = EventReader(data)
    got = list(ev)
    assert [e.step for _, _, e in got] == [0, 1]
    assert [(p.kind, p.offset) for p in ev.problems] == [("bad_event", len(frame_record(good[0])))]
    assert [e.step for _, _, e in read_events(io.BytesIO(data))] == [0, 1]


def test_reader_is_single_use():
    r = RecordReader(b"")
    list(r)
    with pytest.raises(RuntimeError):
        list(r)


def test_large_record_spanning_many_blocks():
    big = payloads(1, size=3_000_000)[0]
    data = frame_record(b"a") + frame_record(big) + frame_record(b"b")
    got, r = read_all(io.BytesIO(data), block_size=4096)
    assert [p for _, _, p in got] == [b"a", big, b"b"]

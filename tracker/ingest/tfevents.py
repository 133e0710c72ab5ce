"""Streaming, damage-tolerant reader for TFRecord-framed ``*tfevents*`` files.

Pure Python + ``crc32c`` + upb protobuf; no Django, no TensorFlow.

Framing of one record (all little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

with ``mask(c) = ((c >> 15 | c << 17) + 0xA282EAD8) & 0xFFFFFFFF``.

Public API
----------
``masked_crc32c(data) -> int`` and ``frame_record(payload) -> bytes``
    The checksum and the framing (used by tests, the benchmark and anyone who writes records).
``Problem(offset, kind, message)``
    One damaged region or undecodable record. ``kind`` is one of ``not_tfevents`` (the data at
    offset 0 is not a record header), ``bad_length_crc``, ``length_too_large``,
    ``bad_payload_crc``, ``truncated`` (only with ``final=True``) and ``bad_event`` (payload is
    not an ``Event``; reported by :class:`EventReader` / the summary decoder).
``RecordReader(source, start_offset=0, *, max_record_bytes=256 MiB, block_size=4 MiB, final=False)``
    ``source`` is a binary file object, a bytes-like object (the whole file) or an iterable of
    byte chunks. A seekable file object is ``seek``-ed to ``start_offset``; for a bytes-like
    source ``start_offset`` indexes into it; for any other source the first byte it produces
    must be the byte at ``start_offset`` (e.g. an HTTP range request). Reported offsets are
    absolute file offsets.

    * ``reader.batches() -> Iterator[RecordBatch]`` -- the fast path: the good records of one
      buffer fill (about ``block_size`` bytes, or one big record) as parallel lists
      ``starts`` and ``payloads`` (``ends`` is derived), plus the batch's ``complete_offset``.
      Persist ``complete_offset`` only after the batch is stored.
    * ``iter(reader) -> Iterator[tuple[start, end, payload]]`` -- one good record at a time.
    * ``reader.problems`` -- list of :class:`Problem`, each damaged region reported exactly once.
    * ``reader.complete_offset`` -- resume point: every byte before it is accounted for (a good
      record, a skipped bad-payload record or a skipped damaged region). Pass it as
      ``start_offset`` next time.
    * ``reader.pending_problem`` -- damage at the tail whose extent is not known yet (it is not
      in ``problems`` and ``complete_offset`` stays at its start).
    * ``reader.end_offset`` -- offset just past the last byte read from the source.

``EventReader`` / ``read_events(source, start_offset=0, **kw)``
    Same, yielding ``(start, end, tracker_tb.Event)``; undecodable payloads become
    ``bad_event`` problems.

Resume semantics
----------------
The reader never raises on bad data and never allocates more than ``max_record_bytes`` plus
a block for one record. At the end of the available data:

* an incomplete record (header or payload still being written/uploaded) is left pending:
  ``complete_offset`` is its start, so the next call reads it once it is complete;
* a damaged region is reported (once) as soon as a valid record header is found after it --
  the bytes in between can never become valid in an append-only file. If no valid header
  follows yet, the damage stays *pending* (``pending_problem``, ``complete_offset`` at its
  start), because a later append may reveal where it ends; resuming re-scans it and reports
  it once;
* with ``final=True`` (the file is known to be complete) a pending tail is reported as a
  problem (``truncated`` or the damage kind) and ``complete_offset`` becomes the end of file.

After a bad length CRC or an impossible length we re-synchronise by scanning forward for the
next position holding a valid header (length <= ``max_record_bytes`` and a matching length
CRC). The scan only checks positions whose high length bytes are zero (found with
``bytes.find``) and jumps over runs of zero bytes, so garbage, text files and random bytes
are skipped at C speed rather than with one CRC per byte. After a bad payload CRC the
(length-CRC-validated) record is skipped as a whole.

TensorBoard itself stops reading a file at the first damaged record; we keep every good
record after the damage instead.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import crc32c as _crc32c_mod
from google.protobuf.message import DecodeError

from tracker.ingest.proto import event_pb2

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_RECORD_BYTES",
    "EventReader",
    "Problem",
    "RecordBatch",
    "RecordReader",
    "frame_record",
    "masked_crc32c",
    "read_events",
]

DEFAULT_MAX_RECORD_BYTES = 256 << 20
DEFAULT_BLOCK_SIZE = 4 << 20

_MASK_DELTA = 0xA282EAD8
_M32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NONZERO = re.compile(rb"[^\x00]")
_crc32c = _crc32c_mod.crc32c

Source = BinaryIO | bytes | bytearray | memoryview | Iterable[bytes]


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of ``data`` masked the way TFRecord stores it."""
    c = _crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & _M32


def frame_record(payload: bytes) -> bytes:
    """Frame one payload as a TFRecord (length, length CRC, payload, payload CRC)."""
    header = _U64.pack(len(payload))
    return b"".join(
        (
            header,
            _U32.pack(masked_crc32c(header)),
            payload,
            _U32.pack(masked_crc32c(payload)),
        )
    )


@dataclass(frozen=True, slots=True)
class Problem:
    """A damaged region / undecodable record at absolute file ``offset``."""

    offset: int
    kind: str
    message: str


@dataclass(slots=True)
class RecordBatch:
    """Good records found in one buffer, as parallel lists (cheap to build and to batch-decode).

    Only start offsets are stored: appending a third list per record costs ~10% of the
    framing throughput, and a record's end is ``start + len(payload) + 16`` anyway.
    """

    starts: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    #: Resume offset valid once everything in this batch has been stored.
    complete_offset: int = 0

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def ends(self) -> list[int]:
        """End offset (exclusive) of each record."""
        return [s + len(p) + 16 for s, p in zip(self.starts, self.payloads, strict=True)]


def _chunk_reader(source: Source, start_offset: int, block_size: int) -> Callable[[], bytes]:
    """Normalise the supported sources into ``read() -> bytes`` (``b""`` at end of data)."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        state = {"pos": start_offset}

        def read_view() -> bytes:
            p = state["pos"]
            chunk = bytes(view[p : p + block_size])
            state["pos"] = p + len(chunk)
            return chunk

        return read_view
    read = getattr(source, "read", None)
    if read is not None:
        seekable = getattr(source, "seekable", None)
        if seekable is not None and seekable():
            source.seek(start_offset)  # type: ignore[union-attr]

        def read_file() -> bytes:
            chunk = read(block_size)
            if not chunk:  # b"" at EOF; None from a non-blocking stream with no data yet
                return b""
            return chunk if isinstance(chunk, bytes) else bytes(chunk)

        return read_file
    it = iter(source)  # type: ignore[arg-type]

    def read_iter() -> bytes:
        for chunk in it:
            if chunk:
                return chunk if isinstance(chunk, bytes) else bytes(chunk)
        return b""

    return read_iter


class RecordReader:
    """Iterate over the good TFRecords of a stream; see the module docstring."""

    def __init__(
        self,
        source: Source,
        start_offset: int = 0,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
        final: bool = False,
    ) -> None:
        if start_offset < 0:
            raise ValueError("start_offset must be >= 0")
        if max_record_bytes < 0 or block_size < 1:
            raise ValueError("max_record_bytes must be >= 0 and block_size >= 1")
        self._read = _chunk_reader(source, start_offset, block_size)
        self.start_offset = start_offset
        self.max_record_bytes = max_record_bytes
        self.block_size = block_size
        self.final = final
        self.problems: list[Problem] = []
        self.complete_offset = start_offset
        self.end_offset = start_offset
        self.pending_problem: Problem | None = None
        self.records = 0
        self._started = False
        # A valid length is <= max_record_bytes, so its top `_zero_hi` bytes are zero; the
        # resync scan only looks at positions where they are (found with bytes.find).
        self._zero_hi = 8 - (max(max_record_bytes, 1).bit_length() + 7) // 8

    # -- resync -------------------------------------------------------------------------

    def _find_header(self, buf: bytes, start: int, n: int) -> tuple[int, int]:
        """Find the first valid record header at index >= ``start`` that fits in ``buf[:n]``.

        Returns ``(index, index)`` or, if there is none, ``(-1, next_scan)`` where
        ``next_scan`` is the first index that could still start a valid header once more
        bytes are available.
        """
        hdr = _HEADER.unpack_from
        maxlen = self.max_record_bytes
        hz = self._zero_hi
        lo = 8 - hz
        needle = b"\x00" * hz
        last = n - 12
        q = start
        while q <= last:
            if hz:
                z = buf.find(needle, q + lo, last + lo + hz)
                if z < 0:
                    break
                q = z - lo
            length, lcrc = hdr(buf, q)
            if length <= maxlen:
                c = _crc32c(buf[q : q + 8])
                if (((c >> 15) | (c << 17)) + _MASK_DELTA) & _M32 == lcrc:
                    return q, q
            if length == 0 and lcrc == 0:
                # 12 zero bytes. A valid header is never all zeros (the masked CRC of eight
                # zero bytes is not 0), so no header can start inside a zero run except in
                # its last 11 bytes: jump there instead of testing every position.
                m = _NONZERO.search(buf, q, n)
                if m is None:
                    return -1, max(q + 1, n - 11)
                q = max(q + 1, m.start() - 11)
                continue
            q += 1
        return -1, max(start, last + 1)

    # -- main loop ----------------------------------------------------------------------

    def batches(self) -> Iterator[RecordBatch]:
        """Yield batches of good records (fast path). A reader can be consumed only once."""
        if self._started:
            raise RuntimeError("a RecordReader can only be iterated once")
        self._started = True
        read = self._read
        crc = _crc32c
        hdr = _HEADER.unpack_from
        u32 = _U32.unpack_from
        maxlen = self.max_record_bytes
        block = self.block_size
        problems = self.problems

        buf = b""
        n = 0
        base = self.start_offset  # absolute offset of buf[0]
        pos = 0
        eof = False
        need = 12  # bytes needed at `pos` before any progress is possible
        damage_start = -1  # absolute offset of unresolved damage, -1 if none
        damage_kind = ""
        damage_msg = ""
        scan = 0

        while True:
            if n - pos < need and not eof:
                # Refill: keep the unconsumed tail, read at least `need` bytes (one join, so
                # a 100 MiB record costs one copy, not one per block).
                chunks = [buf[pos:]] if pos < n else []
                have = n - pos
                if damage_start >= 0:
                    scan -= pos
                base += pos
                pos = 0
                target = max(need, block)
                while have < target:
                    chunk = read()
                    if not chunk:
                        eof = True
                        break
                    chunks.append(chunk)
                    have += len(chunk)
                buf = b"".join(chunks) if len(chunks) != 1 else chunks[0]
                n = len(buf)
                self.end_offset = base + n

            starts: list[int] = []
            payloads: list[bytes] = []
            if damage_start >= 0:
                q, scan = self._find_header(buf, scan, n)
                if q >= 0:
                    problems.append(
                        Problem(
                            damage_start,
                            damage_kind,
                            f"{damage_msg}; skipped {base + q - damage_start} bytes",
                        )
                    )
                    damage_start = -1
                    pos = q
                    need = 12
                else:
                    pos = scan
                    need = n - pos + 1  # any progress needs at least one more byte
                    if eof:
                        break
                    continue
            add_start = starts.append
            add_payload = payloads.append
            while True:
                p12 = pos + 12
                if p12 > n:
                    need = 12
                    break
                length, lcrc = hdr(buf, pos)
                c = crc(buf[pos : p12 - 4])
                if (((c >> 15) | (c << 17)) + _MASK_DELTA) & _M32 != lcrc or length > maxlen:
                    damage_start = base + pos
                    if length > maxlen and ((((c >> 15) | (c << 17)) + _MASK_DELTA) & _M32 == lcrc):
                        damage_kind = "length_too_large"
                        damage_msg = f"record length {length} exceeds {maxlen}"
                    elif damage_start == 0:
                        damage_kind = "not_tfevents"
                        damage_msg = "data does not start with a TFRecord header"
                    else:
                        damage_kind = "bad_length_crc"
                        damage_msg = "record header fails its length CRC"
                    scan = pos + 1
                    need = 12
                    break
                end = p12 + length  # end of payload; the record ends 4 bytes later
                if end + 4 > n:
                    need = length + 16
                    break
                payload = buf[p12:end]
                c = crc(payload)
                if (((c >> 15) | (c << 17)) + _MASK_DELTA) & _M32 != u32(buf, end)[0]:
                    problems.append(
                        Problem(
                            base + pos,
                            "bad_payload_crc",
                            f"payload of {length} bytes fails its CRC; record skipped",
                        )
                    )
                    pos = end + 4
                    continue
                add_start(base + pos)
                add_payload(payload)
                pos = end + 4
            count = len(payloads)
            self.records += count
            self.complete_offset = damage_start if damage_start >= 0 else base + pos
            if count:
                yield RecordBatch(starts, payloads, self.complete_offset)
            if damage_start < 0 and eof and n - pos < need:
                break  # nothing more can complete: leftover bytes (if any) are the tail

        self._finish(base, pos, n, damage_start, damage_kind, damage_msg)

    def _finish(self, base: int, pos: int, n: int, damage_start: int, kind: str, msg: str) -> None:
        end = base + n
        if damage_start >= 0:
            problem = Problem(damage_start, kind, f"{msg}; no valid record follows")
            if self.final:
                self.problems.append(problem)
                self.complete_offset = end
            else:
                self.pending_problem = problem
                self.complete_offset = damage_start
        elif pos < n:
            if self.final:
                self.problems.append(
                    Problem(base + pos, "truncated", f"incomplete record of {n - pos} bytes at end")
                )
                self.complete_offset = end
            else:
                self.complete_offset = base + pos
        else:
            self.complete_offset = base + pos

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        for batch in self.batches():
            for start, payload in zip(batch.starts, batch.payloads, strict=True):
                end = start + len(payload) + 16
                # Per-record resume point, in case the consumer stops mid-batch.
                self.complete_offset = end
                yield start, end, payload
            self.complete_offset = batch.complete_offset
        # batches() has set the final complete_offset by now.


class EventReader:
    """Like :class:`RecordReader` but yields ``(start, end, Event)``.

    Payloads that do not parse as ``Event`` are recorded as ``bad_event`` problems.
    """

    def __init__(self, source: Source, start_offset: int = 0, **kwargs: object) -> None:
        self.records = RecordReader(source, start_offset, **kwargs)  # type: ignore[arg-type]

    @property
    def problems(self) -> list[Problem]:
        return self.records.problems

    @property
    def complete_offset(self) -> int:
        return self.records.complete_offset

    @property
    def pending_problem(self) -> Problem | None:
        return self.records.pending_problem

    def __iter__(self) -> Iterator[tuple[int, int, event_pb2.Event]]:
        parse = event_pb2.Event.FromString
        for start, end, payload in self.records:
            try:
                event = parse(payload)
            except DecodeError as exc:
                self.records.problems.append(Problem(start, "bad_event", f"not an Event: {exc}"))
                continue
            yield start, end, event


def read_events(
    source: Source, start_offset: int = 0, **kwargs: object
) -> Iterator[tuple[int, int, event_pb2.Event]]:
    """Convenience: iterate ``(start, end, Event)``; use :class:`EventReader` to see problems."""
    return iter(EventReader(source, start_offset, **kwargs))

"""On-disk journal of one run's undelivered records.

Layout, under `<cache>/journal/<server-host>/<run id or local id>/`:

* `records.log` — magic, then append-only records `u32 length | u32 crc32(length, payload) |
  payload` (payload = `Record.to_payload()`), fsync'd after every append. A record cut short by
  a crash fails its length or CRC check; it and anything after it are ignored and truncated
  away on the next open, so appends never land behind garbage.
* `acks.log` — `u64 seq | u32 crc32` per record the server acknowledged (or permanently
  rejected). Acks are flushed but not fsync'd: losing one only means the record is re-sent with
  its original Idempotency-Key, which the server answers as a duplicate, so exactly-once holds
  without paying an fsync per delivered batch.
* `meta.json` — server URL, project, local id, and the server run id once known (lazily created
  runs get it when their `create_run` record is delivered).
* `lock` — flock'd by the owning process so `tracker sync` never races a live run.

Delivery order is ascending `seq` (the order the records were formed), not file order: a batch
that was in flight when the server went away is journaled after later batches were spilled,
and must still go first.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import journal_root, server_dirname
from .records import Record

try:  # POSIX only; elsewhere we simply do not lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("tracker_client")

MAGIC = b"TRKJ\x00\x01\r\n"
_REC = struct.Struct("<II")
_ACK = struct.Struct("<QI")
# Anything bigger is damage, not a record: batches are capped far below this.
MAX_RECORD_BYTES = 1 << 30

RECORDS = "records.log"
ACKS = "acks.log"
META = "meta.json"
LOCK = "lock"


class JournalLocked(RuntimeError):
    """Another process (a live run or another `tracker sync`) owns this journal."""


def _crc(length_bytes: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes)) & 0xFFFFFFFF


def encode_frame(payload: bytes) -> bytes:
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


def scan_records(path: Path) -> tuple[list[tuple[int, int]], int, int]:
    """Validate a records file: ([(payload offset, payload length)], good end, file size)."""
    frames: list[tuple[int, int]] = []
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return frames, 0, 0
    size = len(data)
    if size < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        return frames, 0, size
    pos = len(MAGIC)
    view = memoryview(data)
    while pos + _REC.size <= size:
        length, crc = _REC.unpack_from(view, pos)
        start = pos + _REC.size
        if length > MAX_RECORD_BYTES or start + length > size:
            break
        if _crc(struct.pack("<I", length), view[start : start + length]) != crc:
            break
        frames.append((start, length))
        pos = start + length
    return frames, pos, size


def scan_acks(path: Path) -> set[int]:
    acked: set[int] = set()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return acked
    for pos in range(0, len(data) - _ACK.size + 1, _ACK.size):
        seq, crc = _ACK.unpack_from(data, pos)
        if zlib.crc32(data[pos : pos + 8]) & 0xFFFFFFFF != crc:
            break
        acked.add(seq)
    return acked


def new_local_id() -> str:
    return f"local-{uuid.uuid4().hex[:16]}"


class Journal:
    """One run's journal; thread-safe; holds the directory lock while open."""

    def __init__(self, directory: Path, *, meta: dict[str, Any] | None = None) -> None:
        self.dir = directory
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                raise JournalLocked(f"journal {directory} is in use by another process") from None
        try:
            self._open(meta)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening -----------------------------------------------------------------------------

    def _open(self, meta: dict[str, Any] | None) -> None:
        meta_path = self.dir / META
        if meta_path.exists():
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta:
                for key, value in meta.items():
                    if self.meta.get(key) is None and value is not None:
                        self.meta[key] = value
                self._write_meta()
        else:
            self.meta = dict(meta or {})
            self.meta.setdefault("version", 1)
            self.meta.setdefault("created_at", time.time())
            self._write_meta()
        records_path = self.dir / RECORDS
        frames, good_end, size = scan_records(records_path)
        if size and good_end < size:
            logger.warning(
                "journal %s: ignoring %d damaged trailing bytes (interrupted write)",
                records_path,
                size - good_end,
            )
        self._fd = os.open(records_path, os.O_RDWR | os.O_CREAT, 0o600)
        if good_end == 0:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, MAGIC, 0)
            good_end = len(MAGIC)
            os.fsync(self._fd)
        elif good_end < size:
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self._end = good_end
        acked = scan_acks(self.dir / ACKS)
        self._ack_fh = open(self.dir / ACKS, "ab")  # noqa: SIM115 - lives as long as the journal
        self._index: dict[int, tuple[int, int, str, int]] = {}  # seq -> offset, len, kind, count
        self._pending: list[int] = []
        self.max_seq = -1
        for offset, length in frames:
            record = Record.from_payload(os.pread(self._fd, length, offset))
            self.max_seq = max(self.max_seq, record.seq)
            if record.seq in acked or record.seq in self._index:
                continue
            self._index[record.seq] = (offset, length, record.kind, record.count)
        self._pending = sorted(self._index)
        self.max_seq = max([self.max_seq, *acked]) if acked else self.max_seq

    def _write_meta(self) -> None:
        tmp = self.dir / f".{META}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.meta, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / META)

    def update_meta(self, **values: Any) -> None:
        with self._lock:
            self.meta.update(values)
            self._write_meta()

    # -- writing -----------------------------------------------------------------------------

    def append(self, record: Record) -> None:
        """Durably append a record (fsync before returning)."""
        payload = record.to_payload()
        frame = encode_frame(payload)
        with self._lock:
            if record.seq in self._index:
                return  # already journaled (e.g. spilled twice)
            offset = self._end
            written = os.pwrite(self._fd, frame, offset)
            if written != len(frame):
                raise OSError(f"short write to journal {self.dir}")
            os.fsync(self._fd)
            self._end = offset + len(frame)
            self._index[record.seq] = (offset + _REC.size, len(payload), record.kind, record.count)
            bisect.insort(self._pending, record.seq)
            self.max_seq = max(self.max_seq, record.seq)

    def ack(self, seq: int) -> bool:
        """Mark a record delivered; returns False when it was not pending here."""
        with self._lock:
            if self._index.pop(seq, None) is None:
                return False
            idx = bisect.bisect_left(self._pending, seq)
            if idx < len(self._pending) and self._pending[idx] == seq:
                del self._pending[idx]
            raw = struct.pack("<Q", seq)
            self._ack_fh.write(raw + struct.pack("<I", zlib.crc32(raw) & 0xFFFFFFFF))
            self._ack_fh.flush()
            if not self._index:
                self._compact_locked()
            return True

    def _compact_locked(self) -> None:
        """Everything delivered: reset both files so a long-lived journal does not grow."""
        os.ftruncate(self._fd, len(MAGIC))
        os.fsync(self._fd)
        self._end = len(MAGIC)
        self._ack_fh.seek(0)
        self._ack_fh.truncate(0)
        # Remember the highest seq so new records of a resumed run keep sorting after old ones.
        self.meta["last_seq"] = self.max_seq
        self._write_meta()

    # -- reading -----------------------------------------------------------------------------

    def __contains__(self, seq: int) -> bool:
        return seq in self._index

    def first_pending(self, skip: set[int] | frozenset[int] = frozenset()) -> int | None:
        """Lowest pending seq, ignoring those in `skip` (records already in flight)."""
        with self._lock:
            for seq in self._pending:
                if seq not in skip:
                    return seq
            return None

    def kind_of(self, seq: int) -> str | None:
        entry = self._index.get(seq)
        return entry[2] if entry is not None else None

    def pending_seqs(self) -> list[int]:
        with self._lock:
            return list(self._pending)

    def read(self, seq: int) -> Record:
        with self._lock:
            offset, length, _, _ = self._index[seq]
            return Record.from_payload(os.pread(self._fd, length, offset))

    def __iter__(self) -> Iterator[Record]:
        for seq in self.pending_seqs():
            if seq in self._index:
                yield self.read(seq)

    @property
    def pending_count(self) -> int:
        return len(self._index)

    def summary(self) -> Counter[str]:
        """Pending items by kind (points for metrics, images, records for control kinds)."""
        counts: Counter[str] = Counter()
        with self._lock:
            for _, _, kind, count in self._index.values():
                counts[kind] += count or 1
                counts[f"{kind}_records"] += 1
        return counts

    @property
    def next_seq(self) -> int:
        return max(self.max_seq, int(self.meta.get("last_seq", -1))) + 1

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self, *, remove_if_empty: bool = True) -> bool:
        """Release the journal; deletes the directory when nothing is pending. True if removed."""
        with self._lock:
            empty = not self._index
            with contextlib.suppress(OSError):
                self._ack_fh.flush()
                os.fsync(self._ack_fh.fileno())
            self._ack_fh.close()
            os.close(self._fd)
            removed = False
            if empty and remove_if_empty:
                shutil.rmtree(self.dir, ignore_errors=True)
                removed = True
            os.close(self._lock_fd)
            return removed


def run_journal_dir(url: str, dirname: str, root: Path | None = None) -> Path:
    return (root or journal_root()) / server_dirname(url) / dirname


def list_journal_dirs(root: Path | None = None) -> list[Path]:
    base = root or journal_root()
    if not base.is_dir():
        return []
    return sorted(p.parent for p in base.glob("*/*/" + META))

"""Accept points at memory speed; form, send, retry and spool them in the background.

Three stages, so that `run.log()` never waits on anything but a short uncontended lock:

1. **MetricBuffer** (caller thread): validate with two C-level set checks, copy the dict, stamp
   step and wall time, append to three parallel lists (step, wall, dict). Cost is independent of
   the network and nearly independent of the number of keys. No tuple per call on purpose: a
   dict of floats is not tracked by the garbage collector, a tuple holding it is, and hundreds
   of thousands of tracked rows made every GC pass crawl (3x slower `log()`).
2. **Former** (thread `tracker-batcher`, every 0.5 s or as soon as a batch (25,000 points) or
   64 images are waiting): swaps the row list out, transposes it into binary columns
   (`columns`; rows with the same key set share one step and one wall-time column; woken by a
   full buffer, only whole batches, the rest waits), gzips it, and fixes each batch as a
   `Record` with a sequence number and an Idempotency-Key. Records go to an in-memory heap, or
   to the on-disk journal when the client is offline or more than `max_memory_bytes` is waiting.
3. **Sender** (thread `tracker-sender`): always delivers the lowest pending sequence number,
   whether it sits in memory or in the journal, so order survives spills and outages. Transient
   failures (connection errors, timeouts, 408/429/5xx) are retried with backoff+jitter and
   the same key; when the server stays unreachable past the grace period everything pending is
   moved to the journal and the sender probes with growing pauses until the server is back.
   Other 4xx answers drop that one batch (logged with the server's message and counted): a
   malformed batch must not stall the rest of the run.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import media
from ._threads import WorkerPool
from ._values import MAX_STEP, coerce_step, coerce_value, validate_key
from .columns import ColumnsBuilder
from .http import ApiError, HttpClient, TrackerUnreachable, backoff_delay
from .journal import Journal
from .records import (
    ARTIFACT,
    CREATE_RUN,
    IMAGES,
    METRIC_COLUMNS,
    METRIC_KINDS,
    Record,
    RunNotCreated,
    deliver,
    gzip_body,
    json_record,
    new_key,
)

logger = logging.getLogger("tracker_client")

MAX_BATCH_POINTS = 25_000  # contract allows 100,000; bench: 8 clients p95 160-184 ms (50k: 379)
MAX_BATCH_SERIES = 1_000
MAX_ITEMS_PER_REQUEST = 1_000
MAX_ITEM_BYTES_PER_REQUEST = 4 * 1024 * 1024
MAX_IMAGES_PER_REQUEST = 64
MAX_IMAGE_BYTES_PER_REQUEST = 32 * 1024 * 1024
FLUSH_INTERVAL = 0.5
MAX_MEMORY_BYTES = 64 * 1024 * 1024
# Unformed rows beyond this make log() form batches itself (see MetricBuffer._relieve).
MAX_BUFFER_POINTS = 2_000_000
MAX_BUFFER_ROWS = 250_000
RETRY_BUDGET = 120.0  # how long 5xx/429 may persist before a batch is parked in the journal
PROBE_MAX = 30.0
PROGRESS_MIN_POINTS = 200_000
IMAGE_LANES = 2  # image requests in flight at once

_NUMERIC = frozenset((int, float))

Columns = tuple[list[int], list[float], list[dict[str, int | float]]]


class MetricBuffer:
    """The hot path behind `run.log()`: rows appended under a lock, swapped out by the former."""

    __slots__ = (
        "_lock",
        "_steps",
        "_walls",
        "_dicts",
        "_pending",
        "_next_step",
        "_known",
        "_wake_at",
        "_wake",
        "_woken",
        "closed",
        "_warned_closed",
        "overflow",
    )

    def __init__(self, wake: Callable[[], Any], wake_at: int = MAX_BATCH_POINTS) -> None:
        self._lock = threading.Lock()
        self._steps: list[int] = []
        self._walls: list[float] = []
        self._dicts: list[dict[str, int | float]] = []
        self._pending = 0
        self._next_step = 0
        self._known: set[str] = set()
        self._wake_at = wake_at
        self._wake = wake
        self._woken = False
        self.closed = False
        self._warned_closed = False
        self.overflow: Callable[[], Any] | None = None

    @property
    def next_step(self) -> int:
        return self._next_step

    @next_step.setter
    def next_step(self, value: int) -> None:
        with self._lock:
            self._next_step = value

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Record `data` at `step` (auto-incremented when None); returns immediately."""
        # Hand-tuned: a Python loop beats set(map(type, ...)) for the usual handful of keys,
        # and lock.acquire()/release() costs half of `with lock:` on CPython 3.11.
        row = None
        if type(data) is dict and self._known.issuperset(data):
            for value in data.values():
                if type(value) is not float and type(value) is not int:
                    break
            else:
                row = data.copy()
        if row is None:
            row = self._normalize(data)
        if step is not None and (type(step) is not int or step < 0 or step > MAX_STEP):
            step = coerce_step(step)
        wall = time.time()
        lock = self._lock
        lock.acquire()
        try:
            if self.closed:
                self._closed_warning()
                return
            if step is None:
                step = self._next_step
                self._next_step = step + 1
            elif step >= self._next_step:
                self._next_step = step + 1
            self._steps.append(step)
            self._walls.append(wall)
            self._dicts.append(row)
            self._pending += len(row)
            if self._pending < self._wake_at:
                return
            pressure = self._pressure_locked()
        finally:
            lock.release()
        if pressure:
            self._relieve(pressure)

    def append_row(self, step: int, wall: float, data: Mapping[str, Any]) -> None:
        """A row with explicit step and wall time that leaves the auto-step alone (telemetry,
        SummaryWriter)."""
        row = self._normalize(data)
        step = coerce_step(step)
        wall = float(wall)
        if not math.isfinite(wall):
            raise ValueError(f"wall_time must be finite, got {wall}")
        with self._lock:
            if self.closed:
                self._closed_warning()
                return
            self._steps.append(step)
            self._walls.append(wall)
            self._dicts.append(row)
            self._pending += len(row)
            if self._pending < self._wake_at:
                return
            pressure = self._pressure_locked()
            if not pressure:
                return
        self._relieve(pressure)

    def _pressure_locked(self) -> int:
        """0: nothing to do; 1: wake the former; 2: the buffer is over its hard limit."""
        if self._pending >= MAX_BUFFER_POINTS or len(self._steps) >= MAX_BUFFER_ROWS:
            return 2
        if self._woken:
            return 0
        self._woken = True
        return 1

    def _relieve(self, pressure: int) -> None:
        if pressure == 2 and self.overflow is not None:
            # The encoder cannot keep up: do its work here. That slows the caller down to the
            # encoder's pace (CPU, never the network) instead of growing memory without bound.
            self.overflow()
        else:
            self._wake()

    def _normalize(self, data: Mapping[str, Any]) -> dict[str, int | float]:
        if not isinstance(data, Mapping):
            raise TypeError(f"log() expects a dict of key -> number, got {type(data).__name__}")
        out: dict[str, int | float] = {}
        known = self._known
        for key, value in data.items():
            if key not in known:
                validate_key(key, "metric key")
                if len(known) < 1_000_000:
                    known.add(key)
            out[key] = coerce_value(value, key)
        return out

    def _closed_warning(self) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            logger.warning("tracker: log() called on a finished run; the data is ignored")

    def take(self) -> Columns:
        """Swap out everything buffered: (steps, wall times, dicts), in logging order."""
        with self._lock:
            cols = (self._steps, self._walls, self._dicts)
            self._steps, self._walls, self._dicts = [], [], []
            self._pending = 0
            self._woken = False
        return cols

    @property
    def pending(self) -> int:
        return self._pending


def form_metric_batches(
    columns: Columns,
    max_points: int = MAX_BATCH_POINTS,
    max_series: int = MAX_BATCH_SERIES,
) -> list[tuple[bytes, int]]:
    """Columns bodies (uncompressed; `columns`) of at most max_points points / max_series series.

    Consecutive rows with the same key set are handled as one block, so steps and wall times are
    encoded once per block instead of once per key, and values are pulled out per key with
    C-level maps. Within a series the points keep their logging order (the server's
    last-write-wins for a repeated step depends on it).
    """
    max_series = max(1, min(max_series, max_points))
    out: list[tuple[bytes, int]] = []
    builder = ColumnsBuilder()
    steps, walls, dicts = columns
    i, n = 0, len(dicts)
    uniform = n > 0 and all(map(dicts[0].keys().__eq__, map(dict.keys, dicts)))
    while i < n:
        keys = dicts[i].keys()
        if uniform:
            j = n  # the common case (same keys every call) checked above in C, not per row
        else:
            j = i + 1
            while j < n and dicts[j].keys() == keys:
                j += 1
        key_list = list(keys)
        for k0 in range(0, len(key_list), max_series):
            block_keys = key_list[k0 : k0 + max_series]
            start = i
            while start < j:
                new_series = sum(1 for k in block_keys if k not in builder.series)
                room = (max_points - builder.points) // len(block_keys)
                if builder.points and (new_series > max_series - len(builder.series) or room == 0):
                    out.append(builder.emit())
                    builder = ColumnsBuilder()
                    continue
                end = min(j, start + max(room, 1))
                builder.add(steps[start:end], walls[start:end], dicts[start:end], block_keys)
                start = end
        i = j
    if builder.points:
        out.append(builder.emit())
    return out


def chunk_items(
    items: list[dict[str, Any]],
    max_items: int = MAX_ITEMS_PER_REQUEST,
    max_bytes: int = MAX_ITEM_BYTES_PER_REQUEST,
) -> list[list[dict[str, Any]]]:
    """Split JSON items into request-sized groups (by count and approximate encoded size)."""
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":"))) + 1  # + separator
        if current and (len(current) >= max_items or size + item_size > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        groups.append(current)
    return groups


class RunState:
    """Identity of a run shared by the pipeline, the artifact uploader and the Run object."""

    def __init__(
        self,
        *,
        url: str,
        project: str | None,
        server_id: int | None,
        local_id: str,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.project = project
        self.server_id = server_id
        self.local_id = local_id
        self.name = name
        self.web_url: str | None = None
        self.created = threading.Event()
        if server_id is not None:
            self.created.set()

    def set_created(self, data: Mapping[str, Any]) -> None:
        self.server_id = int(data["id"])
        self.web_url = data.get("url") or self.web_url
        self.name = data.get("name") or self.name
        self.project = data.get("project") or self.project
        self.created.set()


# Delivery outcomes
_DELIVERED, _DROPPED, _UNREACHABLE, _DEAD, _STOPPED = range(5)


class Pipeline:
    """Buffers, forms, journals and delivers everything one run logs."""

    def __init__(
        self,
        *,
        http: HttpClient | None,
        run: RunState,
        journal_factory: Callable[[], Journal],
        journal: Journal | None = None,
        offline: bool = False,
        grace: float = 10.0,
        retry_budget: float = RETRY_BUDGET,
        batch_points: int = MAX_BATCH_POINTS,
        flush_interval: float = FLUSH_INTERVAL,
        max_memory_bytes: int = MAX_MEMORY_BYTES,
        artifact_handler: Callable[[Record], Any] | None = None,
        start_seq: int = 0,
    ) -> None:
        self.http = http
        self.run = run
        self._journal_factory = journal_factory
        self._journal = journal
        self._forced_offline = offline or http is None
        self._grace = grace
        self._retry_budget = retry_budget
        env_points = os.environ.get("TRACKER_BATCH_POINTS")
        if env_points and env_points.isdigit():  # tuning knob, clamped to the contract's limit
            batch_points = min(max(int(env_points), 1_000), 100_000)
        self._batch_points = batch_points
        self._flush_interval = flush_interval
        self._max_memory_bytes = max_memory_bytes
        self._artifact_handler = artifact_handler
        start = max(start_seq, journal.next_seq if journal is not None else 0)
        self._seq = itertools.count(start)
        self._last_seq = start - 1

        self._wake_event = threading.Event()
        self._carry: Columns = ([], [], [])  # rows held back for a whole batch (former only)
        self.buffer = MetricBuffer(self._wake_event.set, wake_at=self._batch_points)
        self.buffer.overflow = self.form_now
        self._items_lock = threading.Lock()
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._images: list[tuple[dict[str, Any], media.Captured]] = []
        self._form_lock = threading.Lock()

        self._cv = threading.Condition(threading.Lock())
        self._mem: dict[int, Record] = {}
        self._heap: list[int] = []
        self._mem_bytes = 0
        self._offline = False
        self._dead = False
        self._closed = False
        self._journal_failed = False
        self._failed_probes = 0
        self._probe_delay = 1.0
        self._probe_at = 0.0
        self._abort = threading.Event()
        self._inflight: set[int] = set()
        self._lanes = WorkerPool(IMAGE_LANES, "tracker-images")
        self._stop_former = threading.Event()
        self._last_error_log: dict[tuple[int, str], float] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "points_sent",
                "batches_sent",
                "points_dropped",
                "batches_dropped",
                "images_sent",
                "images_dropped",
                "items_sent",
                "records_journaled",
                "bytes_sent",
            ),
            0,
        )

        self._former = threading.Thread(
            target=self._former_loop, name="tracker-batcher", daemon=True
        )
        self._former.start()
        self._sender: threading.Thread | None = None
        if not self._forced_offline:
            self._sender = threading.Thread(
                target=self._sender_loop, name="tracker-sender", daemon=True
            )
            self._sender.start()

    # -- producers (any thread) ------------------------------------------------------------

    def next_seq(self) -> int:
        return next(self._seq)

    def add_items(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._items_lock:
            self._items.setdefault(kind, []).extend(items)

    def add_image(self, meta: dict[str, Any], captured: media.Captured) -> None:
        with self._items_lock:
            self._images.append((meta, captured))
            wake = len(self._images) >= MAX_IMAGES_PER_REQUEST
        if wake:
            self._wake_event.set()

    def submit(self, kind: str, body: Any, count: int = 0) -> Record:
        """Queue a control record (create_run, params, patch, artifact) in sequence order."""
        record = json_record(kind, self.next_seq(), body, count)
        self._route(record)
        return record

    def submit_record(self, record: Record) -> None:
        """Queue a record built by the caller (e.g. create_run with a pre-chosen key)."""
        self._route(record)

    def go_offline(self) -> None:
        """Start in offline mode (server unreachable at init): journal, probe later."""
        with self._cv:
            self._offline = True
            self._probe_at = time.monotonic() + backoff_delay(0, base=2.0)
            self._cv.notify_all()

    @property
    def offline(self) -> bool:
        return self._forced_offline or self._offline

    @property
    def journal_dir(self) -> Any:
        return self._journal.dir if self._journal is not None else None

    # -- forming ---------------------------------------------------------------------------

    def _former_loop(self) -> None:
        while not self._stop_former.is_set():
            woken = self._wake_event.wait(self._flush_interval)
            self._wake_event.clear()
            try:
                # Woken by a full buffer: whole batches only, the rest waits for more points
                # (or the next tick); a tick with no wake-up sends everything.
                self.form_now(whole_batches=woken)
            except Exception:  # never let a bug kill the thread that owns the data
                logger.exception("tracker: failed to form batches")

    def form_now(self, whole_batches: bool = False) -> int:
        """Turn everything buffered into records; returns the highest sequence number used.

        `whole_batches`: keep back the points beyond the last full batch. Points keep arriving
        while the former wakes up, so taking everything at each wake-up left a small batch
        behind every full one: a third more requests under load, each paying the server's
        fixed cost per request (8 clients on 2 cores: 120 batches for 80 batches' worth).
        """
        with self._form_lock:
            columns = self._carry_over(self.buffer.take(), whole_batches)
            with self._items_lock:
                items, self._items = self._items, {}
                images, self._images = self._images, []
            for body, points in form_metric_batches(columns, self._batch_points):
                self._route(
                    Record(
                        METRIC_COLUMNS, self.next_seq(), new_key(), gzip_body(body), count=points
                    )
                )
            for kind, kind_items in items.items():
                for group in chunk_items(kind_items):
                    self._route(json_record(kind, self.next_seq(), {"items": group}, len(group)))
            if images:
                self._form_images(images)
            # Covers control records submitted concurrently too: anything formed before now.
            self._last_seq = next(self._seq)
            return self._last_seq

    def _carry_over(self, taken: Columns, whole_batches: bool) -> Columns:
        carried = self._carry
        if carried[0]:
            taken = (carried[0] + taken[0], carried[1] + taken[1], carried[2] + taken[2])
        self._carry = ([], [], [])
        if not whole_batches:
            return taken
        ends = list(itertools.accumulate(map(len, taken[2])))  # points up to each row
        whole = (ends[-1] if ends else 0) // self._batch_points * self._batch_points
        cut = bisect.bisect_right(ends, whole)
        steps, walls, dicts = taken
        self._carry = (steps[cut:], walls[cut:], dicts[cut:])
        return steps[:cut], walls[:cut], dicts[:cut]

    def _form_images(self, images: list[tuple[dict[str, Any], media.Captured]]) -> None:
        metas: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        size = 0

        def emit() -> None:
            nonlocal metas, blobs, size
            body = json.dumps(metas, separators=(",", ":")).encode()
            self._route(Record(IMAGES, self.next_seq(), new_key(), body, blobs, len(metas)))
            metas, blobs, size = [], [], 0

        for meta, captured in images:
            try:
                data, mime = media.encode(captured)
            except Exception as exc:
                self.stats["images_dropped"] += 1
                logger.error("tracker: cannot encode image %r: %s", meta.get("key"), exc)
                continue
            if metas and (
                len(metas) >= MAX_IMAGES_PER_REQUEST
                or size + len(data) > MAX_IMAGE_BYTES_PER_REQUEST
            ):
                emit()
            metas.append({**meta, "field": f"f{len(metas)}", "mime": mime})
            blobs.append(data)
            size += len(data)
        if metas:
            emit()

    def _route(self, record: Record) -> None:
        with self._cv:
            if self._closed:
                logger.warning("tracker: dropping %s record submitted after close", record.kind)
                return
            to_journal = (
                self._forced_offline
                or self._offline
                or self._dead
                or self._mem_bytes + record.nbytes > self._max_memory_bytes
            )
            if not (to_journal and self._journal_append_locked(record)):
                self._mem[record.seq] = record
                heapq.heappush(self._heap, record.seq)
                self._mem_bytes += record.nbytes
            self._cv.notify_all()

    def _journal_append_locked(self, record: Record) -> bool:
        """Append to the journal; False (record stays in memory) when the disk fails us."""
        try:
            if self._journal is None:
                self._journal = self._journal_factory()
            self._journal.append(record)
        except OSError as exc:
            if not self._journal_failed:
                self._journal_failed = True
                logger.error(
                    "tracker: cannot write the offline journal (%s); keeping data in memory only",
                    exc,
                )
            return False
        self.stats["records_journaled"] += 1
        return True

    def journal_record(self, record: Record) -> None:
        """Park a record on disk regardless of connectivity (e.g. an artifact that failed)."""
        with self._cv:
            if not self._journal_append_locked(record):
                self._mem[record.seq] = record
                heapq.heappush(self._heap, record.seq)
                self._mem_bytes += record.nbytes
            self._cv.notify_all()

    def _spill_locked(self) -> None:
        """Move in-memory records to the journal (offline, or before shutdown)."""
        for seq in sorted(self._mem):
            record = self._mem[seq]
            if not self._journal_append_locked(record):
                break
            del self._mem[seq]
            self._mem_bytes -= record.nbytes

    # -- sending ---------------------------------------------------------------------------

    def _next_locked(self) -> tuple[int | None, bool]:
        """Lowest pending sequence number not already in flight: (seq, lives in journal)."""
        heap, mem, busy = self._heap, self._mem, self._inflight
        while heap and heap[0] not in mem:
            heapq.heappop(heap)
        if not heap:
            mem_seq = None
        elif heap[0] not in busy:
            mem_seq = heap[0]
        else:  # a few records in flight: the heap holds a few hundred at most
            mem_seq = min((q for q in heap if q in mem and q not in busy), default=None)
        journal_seq = self._journal.first_pending(busy) if self._journal is not None else None
        if journal_seq is not None and (mem_seq is None or journal_seq < mem_seq):
            return journal_seq, True
        return mem_seq, False

    def _kind_locked(self, seq: int, from_journal: bool) -> str | None:
        if not from_journal:
            return self._mem[seq].kind
        return self._journal.kind_of(seq) if self._journal is not None else None

    def _sender_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._abort.is_set():
                        return
                    seq, from_journal = self._next_locked()
                    wait: float | None = None
                    if seq is not None and not self._dead:
                        wait = self._probe_at - time.monotonic() if self._offline else 0.0
                        if wait <= 0:
                            # Image uploads may overlap (order between images does not matter
                            # and the server spends its time writing blobs); everything else is
                            # sent one at a time, in sequence order.
                            lane = (
                                not self._offline and self._kind_locked(seq, from_journal) == IMAGES
                            )
                            if not lane or len(self._inflight) < IMAGE_LANES:
                                break
                            wait = None  # both lanes busy: wait for one to finish
                    self._cv.wait(wait)
                self._inflight.add(seq)
                record = self._mem.get(seq) if not from_journal else None
            if lane:
                self._lanes.submit(self._send_one, seq, record)
            else:
                self._send_one(seq, record)

    def _send_one(self, seq: int, record: Record | None) -> None:
        """Deliver one record (read from the journal if needed) and settle its outcome."""
        journal = self._journal
        if record is None and journal is not None:
            try:
                record = journal.read(seq)
            except (KeyError, OSError, ValueError) as exc:
                logger.error("tracker: unreadable journal record %s: %s", seq, exc)
                with self._cv:
                    self._inflight.discard(seq)
                    journal.ack(seq)
                    self._cv.notify_all()
                return
        if record is None:
            with self._cv:
                self._inflight.discard(seq)
                self._cv.notify_all()
            return
        outcome = _STOPPED
        try:
            outcome = self._deliver(record)
        finally:
            with self._cv:  # one critical section: never pickable again before it is settled
                self._inflight.discard(seq)
                self._complete_locked(record, outcome)
                self._cv.notify_all()

    def _deliver(self, record: Record) -> int:
        attempt = 0
        first_failure: float | None = None
        while True:
            if self._abort.is_set():
                return _STOPPED
            try:
                if record.kind == ARTIFACT:
                    if self._artifact_handler is None:
                        raise RuntimeError("no artifact handler")
                    self._artifact_handler(record)
                else:
                    response = deliver(self.http, record, self.run.server_id)  # type: ignore[arg-type]
                    if record.kind == CREATE_RUN:
                        self._on_created(response)
                return _DELIVERED
            except ApiError as exc:
                if not exc.retryable:
                    if record.kind == CREATE_RUN:
                        logger.error(
                            "tracker: the server refused to create run %s (%s); its data stays "
                            "in the journal %s",
                            self.run.local_id,
                            exc,
                            self.journal_dir,
                        )
                        return _DEAD
                    self._report_permanent(record, exc)
                    return _DROPPED
                budget, retry_after, failure = self._retry_budget, exc.retry_after, exc
            except TrackerUnreachable as exc:
                budget, retry_after, failure = self._grace, None, exc
            except RunNotCreated:
                return _DEAD
            except Exception as exc:  # a bug or a vanished artifact file: drop, keep running
                logger.error("tracker: dropping %s record: %s", record.kind, exc, exc_info=True)
                return _DROPPED
            if self._offline:
                return _UNREACHABLE  # probing: one attempt per pause
            now = time.monotonic()
            first_failure = first_failure or now
            delay = backoff_delay(attempt, cap=8.0, retry_after=retry_after)
            if now - first_failure + delay > budget:
                logger.debug("tracker: giving up on %s for now: %s", record.kind, failure)
                return _UNREACHABLE
            logger.debug("tracker: retrying %s in %.2fs: %s", record.kind, delay, failure)
            if self._abort.wait(delay):
                return _STOPPED
            attempt += 1

    def _on_created(self, response: Any) -> None:
        if not isinstance(response, Mapping) or "id" not in response:
            raise RuntimeError("create-run response without an id")
        self.run.set_created(response)
        if self._journal is not None:
            self._journal.update_meta(server_run_id=self.run.server_id)
        logger.info("tracker: run %s created as %s", self.run.local_id, self.run.server_id)

    def _report_permanent(self, record: Record, exc: ApiError) -> None:
        if record.kind in METRIC_KINDS:
            self.stats["points_dropped"] += record.count
        elif record.kind == IMAGES:
            self.stats["images_dropped"] += record.count
        self.stats["batches_dropped"] += 1
        key = (exc.status, exc.code)
        now = time.monotonic()
        level = logging.ERROR
        if now - self._last_error_log.get(key, -1e9) < 10.0:
            level = logging.DEBUG  # same failure again within 10 s: don't flood the training log
        else:
            self._last_error_log[key] = now
        logger.log(
            level,
            "tracker: server rejected a batch of %s (%d items) for run %s and it was dropped: %s",
            record.kind,
            record.count,
            self.run.server_id,
            exc,
        )

    def _complete_locked(self, record: Record, outcome: int) -> None:
        if self._closed:
            return
        if outcome in (_DELIVERED, _DROPPED):
            if record.seq in self._mem:
                del self._mem[record.seq]
                self._mem_bytes -= record.nbytes
            if self._journal is not None and record.seq in self._journal:
                self._journal.ack(record.seq)
            if outcome == _DELIVERED:
                self.stats["bytes_sent"] += record.nbytes
                if record.kind in METRIC_KINDS:
                    self.stats["points_sent"] += record.count
                    self.stats["batches_sent"] += 1
                elif record.kind == IMAGES:
                    self.stats["images_sent"] += record.count
                elif record.kind in ("text", "histograms", "pr_curves"):
                    self.stats["items_sent"] += record.count
            if self._offline:
                self._offline = False
                self._probe_delay = 1.0
                pending = self._journal.pending_count if self._journal is not None else 0
                logger.warning(
                    "tracker: server reachable again; delivering %d journaled batches", pending
                )
        elif outcome == _UNREACHABLE:
            if not self._offline:
                self._offline = True
                self._spill_locked()
                logger.warning(
                    "tracker: server %s unreachable; spooling to %s until it is back",
                    self.run.url,
                    self.journal_dir,
                )
            else:
                self._failed_probes += 1
                self._probe_delay = min(self._probe_delay * 2, PROBE_MAX)
            self._probe_at = time.monotonic() + backoff_delay(0, base=self._probe_delay * 2)
        elif outcome == _DEAD:
            self._dead = True
            self._spill_locked()

    # -- flushing / closing ----------------------------------------------------------------

    def _pending_upto_locked(self, target: int) -> tuple[int, int]:
        """(records, items) still pending with seq <= target."""
        records = items = 0
        for seq, rec in self._mem.items():
            if seq <= target:
                records += 1
                items += rec.count or 1
        if self._journal is not None:
            for seq in self._journal.pending_seqs():
                if seq <= target:
                    records += 1
        return records, items

    def flush(self, timeout: float | None = None, progress: bool = False) -> bool:
        """Send everything logged so far. True when delivered; False when some of it is parked
        in the journal (offline) or the timeout expired."""
        target = self.form_now()
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        offline_until: float | None = None
        probe_mark = 0
        try:
            with self._cv:
                while True:
                    records, items = self._pending_upto_locked(target)
                    if records == 0:
                        return True
                    if self._forced_offline or self._dead or self._closed:
                        return False
                    if self._offline:
                        # One immediate probe before giving up: the server may be back already.
                        if offline_until is None:
                            offline_until = time.monotonic() + 6.0
                            probe_mark = self._failed_probes
                            self._probe_at = 0.0
                            self._cv.notify_all()
                        elif self._failed_probes > probe_mark or time.monotonic() > offline_until:
                            return False
                    if progress and bar is None and items >= PROGRESS_MIN_POINTS:
                        bar = _progress_bar(items)
                    if bar is not None:
                        bar.update(max(0, bar.total - items - bar.n))
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cv.wait(0.2 if remaining is None else min(0.2, remaining))
        finally:
            if bar is not None:
                bar.close()

    def close(self, timeout: float | None = None, progress: bool = True) -> int:
        """Flush, stop the threads and release the journal; returns records left journaled."""
        delivered = self.flush(timeout=timeout, progress=progress)
        self.buffer.closed = True
        self._stop_former.set()
        self._wake_event.set()
        self._former.join(timeout=10)
        if not delivered:
            self.form_now()
        self._abort.set()
        with self._cv:
            self._cv.notify_all()
        if self._sender is not None:
            self._sender.join(timeout=40)  # at most one in-flight request (30 s read timeout)
        self._lanes.shutdown(timeout=40)
        with self._cv:
            if self._mem:
                self._spill_locked()
            self._closed = True
            journal, self._journal = self._journal, None
        if journal is None:
            return 0
        pending = journal.pending_count
        journal.close(remove_if_empty=True)
        return pending


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc="tracker: sending", unit="pt", unit_scale=True, leave=False, disable=None
    )

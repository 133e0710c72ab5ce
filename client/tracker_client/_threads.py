"""Small threading helpers that keep working during interpreter shutdown.

`concurrent.futures` refuses new work once `threading` starts shutting down, which happens
*before* `atexit` handlers run — exactly when a script that never called `finish()` gets its
last images and artifacts flushed. Plain daemon threads have no such rule.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sized
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, name: str = "tracker-worker"
) -> list[R]:
    """fn over items on up to `workers` threads; results in input order; raises the first
    failure once every started call has finished (so nothing keeps running behind our back).

    `items` is consumed lazily, one item at a time under a lock, by whichever thread is free:
    a generator may do real work per item (the streaming artifact upload hashes the next part
    there) and it then runs just ahead of the threads, never concurrently with itself. An
    exception raised by the generator counts as a failure like one raised by `fn`.
    """
    source = enumerate(items)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if errors:
                    return
                try:
                    index, item = next(source)
                except StopIteration:
                    return
                except BaseException as exc:  # the generator failed: re-raised below
                    errors.append(exc)
                    return
            try:
                results[index] = fn(item)
            except BaseException as exc:  # re-raised in the caller below
                with lock:
                    errors.append(exc)
                return

    count = len(items) if isinstance(items, Sized) else workers
    threads = [
        threading.Thread(target=worker, name=f"{name}-{i}", daemon=True)
        for i in range(max(1, min(workers, count)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(results))]


class WorkerPool:
    """Fixed daemon threads consuming a queue; `pending` counts submitted-but-unfinished."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cv = threading.Condition()
        self.pending = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._cv:
            self.pending += 1
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            finally:
                with self._cv:
                    self.pending -= 1
                    self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending (True) or the timeout expires (False)."""
        with self._cv:
            return self._cv.wait_for(lambda: self.pending == 0, timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

"""`Dispatcher`: runs guests on a pool of threads so the event loop never waits on one.

wasmtime releases the GIL while wasm runs, so guests on different threads run in
parallel and a long guest holds only its own thread. At most `threads` run at once;
up to `max_queue` more wait (503 beyond that). The wait is bounded by a backstop
timeout (504): the guest's own deadline normally ends it first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

from .problem import GatewayTimeout, Unavailable

__all__ = ["Dispatcher"]

T = TypeVar("T")


class Dispatcher:
    """A bounded thread pool for guest runs; `pending` counts running plus queued."""

    def __init__(self, threads: int, max_queue: int) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self.pending = 0
        self._lock = threading.Lock()  # `pending` drops on guest threads
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "stockade-guest")
        self._closed = False

    @property
    def queued(self) -> int:
        """Runs waiting for a thread."""
        return max(0, self.pending - self.threads)

    async def run(self, fn: Callable[[], T], timeout: float | None) -> T:
        """`fn()` on a guest thread. Raises Unavailable when the queue is full or the pool
        is closed, GatewayTimeout when no result came within `timeout` seconds (a queued
        run is then cancelled; a running one finishes on its own deadline)."""
        if self._closed:
            raise Unavailable("the server is shutting down", 1.0, reason="draining")
        if self.pending >= self.threads + self.max_queue:
            raise Unavailable(f"all {self.threads} guest threads are busy and "
                              f"{self.max_queue} requests are queued", 1.0, reason="queue")
        with self._lock:
            self.pending += 1
        future = self._pool.submit(fn)
        future.add_done_callback(self._done)
        wrapped = asyncio.wrap_future(future)
        if timeout is None:
            return await wrapped
        try:
            return await asyncio.wait_for(wrapped, timeout)
        except TimeoutError:
            raise GatewayTimeout(f"no response within {timeout:g} s") from None

    def _done(self, future: concurrent.futures.Future[T]) -> None:
        # On the guest thread, or on the loop when a queued run is cancelled.
        with self._lock:
            self.pending -= 1

    def close(self, wait: bool = True) -> None:
        """Refuse new runs and, with `wait`, let running ones finish. Safe twice."""
        self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


"""`EpochTicker`: one thread per engine advancing its epoch while runs are active."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["EpochTicker", "TICK_SECONDS"]

# 2 ms keeps deadlines within a few percent of even 100 ms timeouts for ~500 wake-ups/s,
# paid only while a guest runs.
TICK_SECONDS = 0.002


class EpochTicker:
    """Calls `increment` every `interval` seconds while at least one run is active.

    Only ever increments the engine's epoch: never touches a Store (not thread-safe).
    Use `ticks_for(timeout)` to turn a timeout into a store's epoch deadline, and
    `active()` around each run so the thread sleeps when the engine is idle.
    """

    def __init__(self, increment: Callable[[], None], interval: float = TICK_SECONDS) -> None:
        self._increment = increment
        self.interval = interval
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def ticks_for(self, timeout: float) -> int:
        """Epoch deadline (in ticks after the current epoch) for `timeout` seconds."""
        return max(1, math.ceil(timeout / self.interval)) + 1

    def __enter__(self) -> EpochTicker:
        with self._cond:
            if self._closed:
                raise RuntimeError("epoch ticker is closed")
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="stockade-epoch", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._active -= 1

    def active(self) -> EpochTicker:
        """Context manager marking one active run."""
        return self

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            # Sleep outside the lock: waking early (a run starting) must not add a tick.
            time.sleep(self.interval)
            with self._cond:
                if self._closed:
                    return
                self._increment()

    def close(self) -> None:
        """Stop the thread. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

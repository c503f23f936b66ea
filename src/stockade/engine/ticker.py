"""`EpochTicker`: one thread per engine advancing its epoch in step with the clock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["EpochTicker", "TICK_SECONDS"]

# 2 ms keeps deadlines within a few percent of even 100 ms timeouts for ~500 wake-ups/s,
# paid only while a guest runs.
TICK_SECONDS = 0.002
# Bound on catch-up increments after a long stall (a suspended process, a frozen VM).
_MAX_CATCH_UP = 100_000


class EpochTicker:
    """Advances the engine's epoch so that epoch N is reached `N * interval` seconds after
    the ticker's origin, while at least one run is active.

    The epoch follows the clock, not the number of wake-ups: a thread woken late (a
    loaded machine) catches up with several increments, so deadlines do not drift.
    It only calls `increment` (the engine's `increment_epoch`), never touches a Store.
    Enter `active()` around each run; the thread sleeps when the engine is idle.
    """

    def __init__(self, increment: Callable[[], None], interval: float = TICK_SECONDS) -> None:
        self._increment = increment
        self.interval = interval
        self._cond = threading.Condition()
        self._active = 0
        self._epoch = 0
        self._origin = time.monotonic()
        self._closed = False
        self._thread: threading.Thread | None = None

    def ticks_for(self, timeout: float) -> int:
        """Epoch deadline (in ticks after the current epoch) for `timeout` seconds."""
        return max(1, math.ceil(timeout / self.interval))

    def active(self) -> EpochTicker:
        """Context manager marking one active run."""
        return self

    def __enter__(self) -> EpochTicker:
        with self._cond:
            if self._closed:
                raise RuntimeError("epoch ticker is closed")
            if self._active == 0:
                # Resume the clock where the epoch stands: idle time is not counted.
                self._origin = time.monotonic() - self._epoch * self.interval
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

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            # Sleep outside the lock so runs can start and end meanwhile.
            time.sleep(self.interval)
            with self._cond:
                if self._closed:
                    return
                due = int((time.monotonic() - self._origin) / self.interval)
                for _ in range(min(due - self._epoch, _MAX_CATCH_UP)):
                    self._increment()
                self._epoch = max(self._epoch, due)

    def close(self) -> None:
        """Stop the thread. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

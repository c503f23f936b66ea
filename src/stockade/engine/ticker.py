"""`EpochTicker`: one thread per engine that advances its epoch when deadlines fall due.

The one place that turns a timeout into an epoch deadline, for both engines (the
wasmtime-py sandbox and the C-API fast path): the same interval, the same formula. A
tripwire's deadline is exact, kept by the native library (`engine.trip.Tripwire.due`).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EpochTicker", "TICK_SECONDS", "NO_DEADLINE"]

# Epoch N stands for `N * TICK_SECONDS` after the ticker's origin: deadlines are rounded up
# to a tick (plus one of grace), so 5 ms keeps even a 200 ms timeout within 5 %.
TICK_SECONDS = 0.005
# The epoch deadline of a run without a timeout: never reached.
NO_DEADLINE = 1 << 62
# Bound on increments in one catch-up (a process suspended for hours).
_MAX_CATCH_UP = 1_000_000
# The longest the thread sleeps at once (it plans again on waking): a wait past what the
# platform's lock timeout holds (about 9e9 s) raised OverflowError and ended the thread,
# and with it every deadline of its engine.
_LONGEST_SLEEP = 3600.0


class EpochTicker:
    """Maps wall-clock deadlines onto the engine's epoch.

    Epoch N is reached `N * interval` seconds after the ticker's origin. The thread does
    not tick periodically: it sleeps until the earliest registered deadline, then brings
    the epoch up to date in one burst of `increment` calls, so a guest running for a
    minute costs a handful of wake-ups, not thousands (each of which would contend for
    the GIL with host calls). It only calls `increment`, never touches a Store.

    Use `with ticker.deadline(seconds) as ticks:` around a run and pass `ticks` to
    `store.set_epoch_deadline` (`NO_DEADLINE` for None: `seconds=None` registers no
    deadline), or `register` and `unregister` around it (a hot path: no context
    manager object). A tripwire's deadline is not kept here but by the native library's
    own thread (`engine.trip.Tripwire.due`). `watch`, if given, is also called every
    `interval` while any run is registered (the fast path checks output caps with it),
    outside the ticker's lock.
    """

    def __init__(self, increment: Callable[[], None], interval: float = TICK_SECONDS,
                 watch: Callable[[], None] | None = None) -> None:
        self._increment = increment
        self.interval = interval
        self._watch = watch
        # Registering takes the bare lock (a Condition's `with` is Python code).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._epoch = 0
        self._origin = time.monotonic()
        # Heap of [epoch number, sequence, state] runs are waiting for. A run that
        # ends leaves its entry behind, `_LEFT` (a removal costs a heapify per run): the
        # loop drops it when it reaches the head, without moving the epoch, or a
        # compaction does when more than half of the heap is such entries.
        self._deadlines: list[_Entry] = []
        self._left = 0  # `_LEFT` entries still in the heap
        # Runs whose deadline passed and that have not ended (`_PASSED`): while there are
        # any, the epoch advances every tick. A run's epoch deadline is counted from the
        # epoch when its store is set up, after registering: a catch-up in between puts it
        # that many ticks later than the entry's, and a run that did not stop at its
        # entry must still be stopped.
        self._passed = 0
        self._sequence = 0
        self._active = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf  # when the thread next wakes by itself (monotonic)

    def deadline(self, seconds: float | None) -> _Registration:
        """Context manager registering a run's deadline `seconds` from now; enters as the
        epoch deadline in ticks after the current epoch (None: no deadline)."""
        return _Registration(self, seconds)

    def register(self, seconds: float | None) -> tuple[_Entry | None, int | None]:
        """Register a run's deadline `seconds` from now: (its entry, for `unregister`, and
        the epoch deadline in ticks after the current epoch), (None, None) for no
        deadline."""
        if seconds is not None and not math.isfinite(seconds):
            raise ValueError(f"a deadline is a finite number of seconds, not {seconds}")
        with self._lock:
            if self._closed:
                raise RuntimeError("epoch ticker is closed")
            if self._thread is None and (seconds is not None or self._watch is not None):
                thread = threading.Thread(target=self._loop, name="stockade-epoch",
                                          daemon=True)
                thread.start()  # raises when it cannot: nothing is registered then
                self._thread = thread
            now = time.monotonic()
            if self._active == 0:
                # Idle time is not counted: the epoch resumes where it stood.
                self._origin = now - self._epoch * self.interval
            else:
                # The epoch is brought up to the clock first: the run's store counts its
                # deadline from the engine's epoch when it is set up, and a catch-up
                # between now and then (another deadline falling due) would otherwise put
                # it later by all the time since the epoch last moved.
                self._catch_up(now)
            self._active += 1
            if seconds is None:
                if self._watch is not None and self._wake_at > now + self.interval:
                    self._cond.notify()  # idle: start watching
                return None, None
            # Epoch N is reached at origin + N * interval: the first tick at or after the
            # deadline, never before it, plus one tick of grace for the set-up between
            # registering and the guest's first instruction (store, WASI, instance), so a
            # run's own clock never shows it stopped early.
            target = max(math.ceil((now + seconds - self._origin) / self.interval) + 1,
                         self._epoch + 1)
            self._sequence += 1
            entry: _Entry = [target, self._sequence, _WAITING]
            heapq.heappush(self._deadlines, entry)
            # Wake the thread only when it would sleep past this deadline (or should
            # start watching): a wake-up per run costs a thread switch.
            due = min(self._origin + target * self.interval,
                      now + self.interval if self._watch is not None else math.inf)
            if due < self._wake_at:
                self._cond.notify()
            return entry, target - self._epoch

    def unregister(self, entry: _Entry | None) -> None:
        """The run of `entry` (from `register`) ended."""
        with self._lock:
            self._active -= 1
            if self._closed and not self._active:
                self._cond.notify()  # the last run: the thread may end
            # Marked under the lock the loop pops entries under.
            if entry is None:
                return
            state = entry[2]
            if state == _PASSED:  # popped by the loop already
                entry[2] = _ENDED
                self._passed -= 1
            if state != _WAITING:
                return
            entry[2] = _LEFT
            self._left += 1
            if self._left > 64 and 2 * self._left > len(self._deadlines):
                self._deadlines = [kept for kept in self._deadlines if kept[2] == _WAITING]
                heapq.heapify(self._deadlines)
                self._left = 0

    def _loop(self) -> None:
        watched = 0.0
        with self._cond:
            while not self._closed or self._active:  # closed: runs in flight keep theirs
                watching = self._watch is not None and self._active > 0
                if watching and time.monotonic() - watched >= self.interval:
                    self._cond.release()
                    try:
                        self._watch()  # type: ignore[misc]  # not None while watching
                    except Exception:  # noqa: BLE001 - the deadlines must go on
                        _log_failure("the watcher")
                    finally:
                        self._cond.acquire()
                    watched = time.monotonic()
                    continue
                deadlines = self._deadlines
                while deadlines and deadlines[0][2] == _LEFT:  # ended: no catch-up for it
                    heapq.heappop(deadlines)
                    self._left -= 1
                now = time.monotonic()
                wait = self._origin + deadlines[0][0] * self.interval - now \
                    if deadlines else math.inf
                if self._passed:  # the next tick, for runs not stopped at their entry
                    wait = min(wait, self._origin + (self._epoch + 1) * self.interval - now)
                if wait > 0:
                    wait = min(wait, self.interval) if watching else wait
                    self._wake_at = now + wait
                    self._cond.wait(None if wait == math.inf else min(wait, _LONGEST_SLEEP))
                    self._wake_at = -math.inf  # awake: it plans again before sleeping
                    continue
                self._catch_up(time.monotonic())
                # Deadlines now past are done with: their runs' epochs are reached.
                while deadlines and deadlines[0][0] <= self._epoch:
                    entry = heapq.heappop(deadlines)
                    if entry[2] == _LEFT:
                        self._left -= 1
                        continue
                    entry[2] = _PASSED
                    self._passed += 1

    def _catch_up(self, now: float) -> None:
        """Advance the epoch to the tick `now` is in (the lock held), at most
        `_MAX_CATCH_UP` increments at a time: the epoch counts what the engine was given."""
        due = min(int((now - self._origin) / self.interval) - self._epoch, _MAX_CATCH_UP)
        for _ in range(due):
            self._increment()
        self._epoch += max(due, 0)

    def close(self) -> None:
        """Refuse new runs, and stop the thread once the runs in flight have ended (they
        keep their deadlines: an engine closed under a run must not free its guest).
        Waits for the thread only when no run is left. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = None if self._active else self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)


def _log_failure(what: str) -> None:
    """Log the exception `what` raised in the ticker's thread, which goes on: it is all
    that stops a guest without fuel."""
    import logging  # only here: `stockade run` starts without it

    logging.getLogger(__name__).exception("epoch ticker: %s failed", what)


if TYPE_CHECKING:
    # [epoch number, sequence, state]: compared by the first two.
    _Entry = list[Any]
# An entry's state: its run waits for it; passed (popped) while the run goes on; left
# behind in the heap by a run that ended first; ended (out of the heap).
_WAITING, _PASSED, _LEFT, _ENDED = range(4)


class _Registration:
    def __init__(self, ticker: EpochTicker, seconds: float | None) -> None:
        self._ticker = ticker
        self._seconds = seconds
        self._entry: _Entry | None = None

    def __enter__(self) -> int | None:
        self._entry, ticks = self._ticker.register(self._seconds)
        return ticks

    def __exit__(self, *exc: object) -> None:
        self._ticker.unregister(self._entry)

"""`CancelToken`: a request, from any thread, to stop the run in progress on another.

A run picks up the token of its thread (`with cancellable(token): sandbox.run(...)`) and
hands it what stops it: its tripwire (`arm_tripwire`), its engine's epoch and deadline
callback (`attach`, `sandbox.cancel.EpochDeadline`), and whatever its host calls sleep
on (`stop_now()`: a `Meter`, or a fast-path `RunSlot`). `interrupt_cancels` makes Ctrl-C
such a request for the runs of the main thread: a guest in a C call keeps the main thread
from Python's signal handler until it stops by itself, a minute under the default
timeout. Pure Python: no wasmtime-py, so every backend may use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .engine.traps import Ending
from .result import Outcome, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import wasmtime

__all__ = ["CancelToken", "cancellable", "current_token", "interrupt_cancels", "CANCELLED",
           "Interrupted", "INTERRUPTED_EXIT"]


class _Local(threading.local):
    """The token of runs on this thread. A class default, not `getattr(..., None)`:
    a missing attribute raises and catches AttributeError inside, on every run."""

    token: CancelToken | None = None


_local = _Local()


class CancelToken:
    """A request to stop a run in progress, made from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._engine: wasmtime.Engine | None = None
        self._trip: Any = None
        self._meter: Any = None
        self._watch: Any = None

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the run promptly (see the module docstring). Safe twice, and before or
        after the run."""
        # All under the lock: once `disarm` returns, nothing touches the run's slot, which
        # the engine may hand to another run (each step is quick and never calls back).
        with self._lock:
            self._cancelled = True
            if self._watch is not None:  # read by the native callback, before the move
                self._watch.cancelled = 1
            if self._meter is not None:
                self._meter.stop_now()
            if self._engine is not None:
                self._engine.increment_epoch()
            if self._trip is not None:
                self._trip.fire()

    def attach(self, engine: wasmtime.Engine | None, meter: Any, watch: Any) -> bool:
        """Let `cancel()` stop the run: mark `watch` (the native env of an
        `EpochDeadline` watching every move of `engine`'s epoch) and move the epoch, and
        move `meter`'s deadline (None, None without the native library: host calls
        only). A token cancelled already does so now; returns whether it was."""
        with self._lock:
            self._engine, self._meter, self._watch = engine, meter, watch
            cancelled = self._cancelled
            if cancelled and watch is not None:
                watch.cancelled = 1
        if cancelled:
            meter.stop_now()
        return cancelled

    def arm_tripwire(self, trip: Any, meter: Any) -> None:
        """Let `cancel()` fire the run's tripwire (`engine.tripwire.Tripwire`), armed or
        not yet. Call on the run's thread, before it starts the guest."""
        with self._lock:
            self._trip, self._meter = trip, meter
            cancelled = self._cancelled
        if cancelled:
            meter.stop_now()
            trip.fire()

    def disarm(self) -> None:
        """Forget the run (its store is gone): a later `cancel()` touches nothing, and one
        in progress has finished when this returns."""
        with self._lock:
            self._engine = self._meter = self._trip = self._watch = None

    def ending(self, outcome: Outcome) -> Ending | None:
        """What to report instead of `outcome` when the token stopped the run: `error`
        (the caller's choice, not a violation the guest committed: breakers do not count
        it); None otherwise."""
        if self._cancelled and outcome is Outcome.TIMEOUT:
            return CANCELLED
        return None


CANCELLED = Ending(Outcome.ERROR, "cancelled by the caller before the guest finished")
INTERRUPTED_EXIT = 130  # a command stopped by Ctrl-C: 128 + SIGINT, as shells report it


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run that still ended with `result` (what the guest wrote so far):
    a KeyboardInterrupt, so every caller that stops on one still does."""

    def __init__(self, result: Result) -> None:
        super().__init__()
        self.result = result


@contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Runs made on this thread inside the block can be stopped by `token.cancel()`."""
    previous = _local.token
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def current_token() -> CancelToken | None:
    """The token of runs on this thread (None outside `cancellable`)."""
    return _local.token


@contextmanager
def interrupt_cancels(stop: bool = False) -> Iterator[CancelToken | None]:
    """On the main thread, with Python's own SIGINT handler: Ctrl-C in the block cancels
    the runs made in it (the guest stops now), and KeyboardInterrupt is raised when the
    block ends. Inside the block Python's handler only notes the interrupt: raised inside
    a host call's ctypes callback, a KeyboardInterrupt (a second Ctrl-C while the first
    was handled) escaped it and crashed the process. Yields the token (None when nothing
    was set up: another thread, or SIGINT ignored or handled by the program). For runs
    that take the token (in-process); a run that does not would not stop.

    `stop`: the caller stops once interrupted (a command): after a Ctrl-C the block
    leaves SIGINT ignored, not Python's handler back, so another Ctrl-C pressed while it
    stops cannot raise in the middle of its stopping (Ctrl-C pressed three times, 10 ms
    apart, ended `stockade run` by SIGINT itself about once in ten under load)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield None
        return
    token = CancelToken()
    noted: list[bool] = []
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(read_end, True)
    previous: int | None = None  # the descriptor set before, once ours is set
    watcher = threading.Thread(target=_watch, args=(read_end, token, lambda: previous),
                               name="stockade-interrupt", daemon=True)
    handed = False  # the watcher's thread exists: it closes `read_end` as it ends
    try:
        # Set up with SIGINT held back (on this thread; another may still take it, and the
        # clean-up below copes with an interrupt at any step).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
            try:
                watcher.start()
            except RuntimeError:  # no thread
                raise
            except BaseException:  # an interrupt while waiting for the started thread
                handed = True
                raise
            handed = True
            signal.signal(signal.SIGINT, lambda *_: noted.append(True))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        with cancellable(token):
            try:
                yield token
            except BaseException as exc:  # an interrupt noted meanwhile stands over it
                if noted and not isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                    raise KeyboardInterrupt from exc
                raise
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # as for the set-up
        try:
            if stop:  # ignored first: setting it runs the handler of a Ctrl-C pending
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if not (stop and noted):
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if previous is not None:
                signal.set_wakeup_fd(previous)
            os.close(write_end)  # the watcher reads the end of the pipe and returns
            if handed:
                with contextlib.suppress(RuntimeError):  # its start was interrupted
                    watcher.join(timeout=1.0)
            else:
                os.close(read_end)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if noted:
        raise KeyboardInterrupt


def _watch(read_end: int, token: CancelToken, previous: Callable[[], int | None]) -> None:
    """Read the signals Python's C-level handler writes to `read_end`: cancel `token` on
    SIGINT, and pass every byte on to the wakeup descriptor set before (an event loop's,
    whose handlers would otherwise miss their signals). Closes `read_end` at the end of
    the pipe: its number is not reused while this thread could still read it."""
    try:
        while received := os.read(read_end, 64):
            if signal.SIGINT in received:
                token.cancel()
            forward = previous()
            if forward is not None and forward != -1:
                with contextlib.suppress(OSError):  # full or closed: as the handler would
                    os.write(forward, received)
    finally:
        os.close(read_end)

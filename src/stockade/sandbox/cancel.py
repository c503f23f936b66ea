"""`CancelToken`: stop one in-process run from another thread (asyncio cancellation).

A wasmtime Store is not thread-safe, but its engine's epoch is. A run with a token
(`arm`) sets its store's epoch deadline one tick ahead and installs a deadline callback:
every move of the engine's epoch reaches the callback, which traps the guest when the
token is cancelled (`cancel()` advances the epoch by one) or the run's real deadline
has passed (the engine's ticker advances the epoch then, as for every run), and
otherwise waits for the next move. So one cancellation never stops an unrelated run (a
plain `run()` on the same engine, whose deadline is a fixed epoch, can see it at most
one 5 ms tick early). `cancel()` also moves the run's host-call deadline to now, so a
guest in host calls stops at its next one; a sleep already in progress is not cut
short (the timeout bounds it).

A run whose deadline is a tripwire (`engine.tripwire`) is armed with it instead
(`arm_tripwire`): `cancel()` fires the run's tripwire, which stops only that run.

A run picks up the token of its thread: `with cancellable(token): sandbox.run(...)`.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from ..result import Outcome

__all__ = ["CancelToken", "cancellable", "current_token"]

_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t),
                             ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64),
                             ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_local = threading.local()


class CancelToken:
    """A request to stop a run in progress, made from any thread. `reason` is set when
    the token stopped the guest (`cancelled` or `timeout`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._engine: wasmtime.Engine | None = None
        self._trip: Any = None
        self._meter: Any = None
        self.reason: str | None = None
        self._callback: Any = None  # kept alive while the store may call it

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the run promptly (see the module docstring). Safe twice, and before or
        after the run."""
        with self._lock:
            self._cancelled = True
            engine, meter, trip = self._engine, self._meter, self._trip
        if meter is not None:
            meter.deadline = time.monotonic()
        if engine is not None:
            engine.increment_epoch()
        if trip is not None:
            trip.fire()

    def arm(self, store: wasmtime.Store, engine: wasmtime.Engine, meter: Any,
            deadline: float | None) -> None:
        """Install the deadline callback on `store` and set its epoch deadline one tick
        ahead; `deadline` is the run's (`time.monotonic()`, None for none), which the
        engine's ticker must have registered. Call on the run's thread."""

        def on_deadline(_context: Any, _env: Any, delta: Any, kind: Any) -> int:
            if self._cancelled:
                return self._stop("cancelled")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return self._stop("timeout")
            # The epoch moved for another reason (another run's deadline or
            # cancellation): watch the next move.
            delta[0] = 1
            kind[0] = _CONTINUE
            return 0

        self._callback = _CALLBACK(on_deadline)
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback, None,
                                                   _FINALIZER())
        # Every move of the epoch (one tick from `cancel()`, the ticker's burst at this
        # run's deadline) now reaches the callback, which decides. Set before `cancel()`
        # can see the engine: a tick it made before this line would be counted into the
        # deadline and never reach the callback.
        store.set_epoch_deadline(1)
        with self._lock:
            self._engine, self._meter = engine, meter
            cancelled = self._cancelled
        if cancelled:  # cancelled before the run began: stop at the first check
            meter.deadline = time.monotonic()
            store.set_epoch_deadline(0)

    def arm_tripwire(self, trip: Any, meter: Any) -> None:
        """Let `cancel()` fire the run's tripwire (`engine.tripwire.Tripwire`), armed or
        not yet. Call on the run's thread, before it starts the guest."""
        with self._lock:
            self._trip, self._meter = trip, meter
            cancelled = self._cancelled
        if cancelled:
            meter.deadline = time.monotonic()
            trip.fire()

    def disarm(self) -> None:
        """Forget the run (its store is gone): a later `cancel()` touches nothing."""
        with self._lock:
            self._engine = self._meter = self._trip = None

    def ending(self, outcome: Outcome) -> tuple[Outcome, str] | None:
        """What to report instead of `outcome` when the token stopped the run: `error`
        for a cancellation (the caller's choice, not a violation the guest committed:
        breakers do not count it), `timeout` for the real deadline; None otherwise."""
        if self.reason == "cancelled" or (self._cancelled and outcome is Outcome.TIMEOUT):
            return Outcome.ERROR, "cancelled by the caller before the guest finished"
        if self.reason == "timeout":
            return Outcome.TIMEOUT, "wall-clock timeout"
        return None

    def _stop(self, reason: str) -> int:
        self.reason = reason
        error = ffi.wasmtime_error_new(f"stockade: run {reason}".encode())
        address: int = ctypes.cast(error, ctypes.c_void_p).value or 0
        return address


@contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Runs made on this thread inside the block can be stopped by `token.cancel()`."""
    previous = getattr(_local, "token", None)
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def current_token() -> CancelToken | None:
    """The token of runs on this thread (None outside `cancellable`)."""
    token: CancelToken | None = getattr(_local, "token", None)
    return token

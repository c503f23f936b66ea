"""Stopping an in-process run of `Sandbox`: `EpochDeadline` (the deadline of a run on an
epochs engine, by the clock) and how a `CancelToken` (`stockade.cancel`, re-exported
here) reaches it.

A wasmtime Store is not thread-safe, but its engine's epoch is, and anyone may move it:
the native library's deadline thread at any run's deadline (the engine's ticker without
that library), and `cancel()` to wake a cancelled run. So a run on an
epochs engine never trusts an epoch count for its deadline: `EpochDeadline.install`
sets the store's epoch deadline and a callback that every arrival there reaches, which
reads the clock. Past the run's deadline it traps the guest (`timeout`); a cancelled
token traps it (`cancelled`); otherwise the epoch moved early, for another run's sake,
and the callback lets the guest go on to the next move. So no number of other runs'
cancellations stops a run early. The callback looks at every move of the epoch
(`cancel()` advances it by one tick). `cancel()` also moves the run's host-call
deadline to now and wakes a sleep in progress (`Meter.stop_now`), so a guest in host
calls stops in the one it sleeps in or at its next one, with a deadline or without.

The callback is C (`fastpath/_native.c`): a ctypes callback entered with a Python
exception pending (Ctrl-C's) returns garbage, which wasmtime frees as an error. Without
the native library there is none: a run's deadline is a count of epochs, which others'
moves can shorten, and a cancellation stops its guest at the next host call only.

A run whose deadline is a tripwire (`engine.tripwire`) is armed with it instead
(`arm_tripwire`): `cancel()` fires the run's tripwire, which stops only that run.

A run picks up the token of its thread: `with cancellable(token): sandbox.run(...)`.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from ..cancel import CANCELLED, CancelToken, cancellable, current_token
from ..engine.ticker import NO_DEADLINE
from ..engine.traps import TIMED_OUT, Ending
from ..engine.trip import NO_DEADLINE_THREAD, due_ns
from ..result import Outcome

__all__ = ["CancelToken", "EpochDeadline", "cancellable", "current_token", "native_deadlines"]

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t),
                             ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64),
                             ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

class EpochDeadline:
    """The deadline of one run on an epochs engine, decided by the clock (module
    docstring). `deadline` is the run's (`time.monotonic()`, None for none), listed with
    the native library's deadline thread, or registered with the engine's ticker without
    that library, which gave `ticks`."""

    def __init__(self, deadline: float | None, ticks: int | None,
                 token: CancelToken | None) -> None:
        self._deadline = deadline
        self._ticks = ticks
        self._token = token
        # Kept alive while the store may call the callback or read its env.
        self._watch: Any = None
        self._callback: Any = None
        self._listed = False  # on the native library's deadline list

    def install(self, store: wasmtime.Store, engine: wasmtime.Engine, meter: Any) -> None:
        """Set `store`'s epoch deadline and its callback. Call on the run's thread,
        before the guest starts."""
        token = self._token
        native = _native()
        if native is not None and native.WATCH is not None and self._deadline is not None:
            # The library's thread moves the epoch at the deadline, the callback judges
            # every move by the clock (`stockade_watch_start`); `close` takes it off.
            watch = self._watch = native.EpochWatch()
            self._listed = True  # before: taking off one never listed does nothing
            if native.WATCH["start"](store.ptr(), ffi.wasmtime_store_context(store.ptr()),
                                     ctypes.addressof(watch), engine.ptr(),
                                     due_ns(self._deadline)) != 0:
                raise RuntimeError(NO_DEADLINE_THREAD)
            if token is not None and token.attach(engine, meter, watch):
                store.set_epoch_deadline(0)  # cancelled before the run began
            return
        if token is None and self._ticks is None:
            store.set_epoch_deadline(NO_DEADLINE)
            return
        if native is None or token is None:
            # No callback in Python (one entered with an exception pending corrupts the
            # heap): a count of epochs, which others' moves can shorten, and a
            # cancellation that stops the guest at its next host call only.
            store.set_epoch_deadline(NO_DEADLINE if self._ticks is None else self._ticks)
            if token is not None:
                token.attach(None, meter, None)
            return
        # With the library, a cancellable run without a deadline: its callback looks at
        # every move of the epoch (a run with one was listed above).
        watch = self._watch = native.EpochWatch(deadline_ns=-1)
        self._callback = _CALLBACK(native.EPOCH_DEADLINE)
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback,
                                                   ctypes.addressof(watch), _FINALIZER())
        # Every move of the epoch now reaches the callback. Set before `cancel()` can see
        # the engine: a tick it made before this line would be counted into the deadline
        # and never reach the callback.
        store.set_epoch_deadline(1)
        if token.attach(engine, meter, self._watch):  # cancelled before the run began
            store.set_epoch_deadline(0)

    def close(self) -> None:
        """The run is over: its deadline no longer moves the epoch. Before its store goes."""
        if self._listed:
            self._listed = False
            _native().WATCH["stop"](ctypes.addressof(self._watch))

    def __del__(self) -> None:
        # Last resort (an interrupt in the run's `finally`): the list never keeps a
        # pointer to freed memory.
        self.close()

    def ending(self, outcome: Outcome) -> Ending | None:
        """What to report instead of `outcome` when the callback stopped the run:
        `error` for a cancellation, `timeout` for the deadline; None otherwise."""
        if self._watch is not None:
            from ..engine.fastpath._native import WATCH_CANCELLED, WATCH_TIMEOUT

            if self._watch.reason == WATCH_CANCELLED:
                return CANCELLED
            if self._watch.reason == WATCH_TIMEOUT:
                return TIMED_OUT
        return self._token.ending(outcome) if self._token is not None else None


def native_deadlines() -> bool:
    """Whether epochs runs' deadlines are the native library's (`EpochDeadline.install`),
    so they register with no ticker."""
    native = _native()
    return native is not None and native.WATCH is not None


def _native() -> Any:
    """The native library's module when it is built and loads (its `EPOCH_DEADLINE`),
    else None."""
    from ..engine.fastpath import _native as native

    return native if native.EPOCH_DEADLINE is not None else None



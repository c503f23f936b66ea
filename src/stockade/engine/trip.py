"""A run's tripwire: armed with its page, fired at the deadline, and the verdict after.

The rewriting that gives a module its page is `engine.tripwire`; this is what a run does
with it, on every backend: the fast path's native run arms it in C, its ctypes run and
the sandbox (wasmtime-py) through ctypes, all with the native library's one
implementation (`fastpath/_native.c`), whose lock orders fire, arm and disarm.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ..result import Outcome
from .traps import TIMED_OUT, Ending

__all__ = ["EXPORT", "START", "VERSION", "Tripwire", "available", "tripped"]

EXPORT = "__stockade_tripwire"  # the page's export: the host looks its address up by it
# The module's start function, exported instead of run by instantiation: it runs once
# the tripwire is armed, so a start function that loops is stopped like any code.
START = "__stockade_start"
# Of the rewriting (part of the AoT cache key): here, so a key is made without loading it.
VERSION = 4


def available() -> bool:
    """Whether this process can keep deadlines by tripwire: the fast path's native library
    (`fastpath/_native.c`) holds the one implementation of arming and firing, which its
    runs use in C and the sandbox's through ctypes. Without it, engines keep epochs."""
    return _functions() is not None


def _functions() -> dict[str, Any] | None:
    try:
        from .fastpath._native import TRIP
    except Exception:  # noqa: BLE001 - FastPathUnavailable, a library that will not load
        return None
    return TRIP


class Tripwire:
    """One run's tripwire, a `TripState` the native library orders. `fire()` (the ticker's
    thread at the deadline, or a cancellation) revokes the page as soon as the run has
    `arm`ed it with the page's address; `disarm()` (the run's thread, before its store is
    dropped) gives the page back; a page is never revoked after it was given back (the
    memory may then belong to another run). `reset()` readies it for a new run, before
    that run's deadline is registered. `fired` tells the run's verdict that a trap after
    it was the deadline's. Raises RuntimeError without the native library (`available`)."""

    __slots__ = ("state", "address", "_fire", "_arm", "_disarm")

    def __init__(self) -> None:
        functions = _functions()
        if functions is None:
            raise RuntimeError("a tripwire needs the fast path's native library "
                               "(scripts/build_native.py)")
        from .fastpath._native import TripState

        self.state = TripState()
        self.address = ctypes.addressof(self.state)  # what the native run is given
        self._fire, self._arm = functions["fire"], functions["arm"]
        self._disarm = functions["disarm"]

    @property
    def fired(self) -> bool:
        """Whether the deadline (or a cancellation) fired since the last `reset`."""
        return bool(self.state.fired)

    def fire(self) -> None:
        """Trip the guest: its next loop iteration or call traps."""
        self._fire(self.address)

    def arm(self, page: int) -> None:
        """The run's page is at `page` (its instance exists): a deadline already past
        trips it now, before the guest's first instruction."""
        self._arm(self.address, page)

    def disarm(self) -> None:
        """The run is over: restore the page if it was revoked, and forget it."""
        self._disarm(self.address)

    def reset(self) -> None:
        """Ready for a new run: not fired (nothing is armed once a run disarmed). Only
        while no other party holds it: its last run disarmed it, and that run's deadline
        is unregistered (the ticker calls `on_due` under the lock unregistering takes),
        so a plain store suffices: a call into the library costs a tenth of a hello."""
        self.state.fired = 0


def tripped(ending: Ending, trip: Tripwire | None) -> Ending:
    """A run's ending once its tripwire is known: a trap after it fired is the guest's
    next load of the revoked page, its deadline."""
    if trip is not None and trip.fired and ending.outcome is Outcome.TRAP:
        return TIMED_OUT
    return ending

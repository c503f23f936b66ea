"""A run's tripwire: armed with its page, fired at the deadline, and the verdict after.

The rewriting that gives a module its page is `engine.tripwire`; this is what a run does
with it, on every backend: the fast path's native run arms it in C, its ctypes run and
the sandbox (wasmtime-py) through ctypes, all with the native library's one
implementation (`fastpath/_native.c`), whose lock orders fire, arm and disarm.
"""

from __future__ import annotations

import ctypes

from ..result import Outcome
from .traps import TIMED_OUT, Ending

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXPORT", "START", "VERSION", "DEADLINE_GRACE", "NO_DEADLINE_THREAD", "Tripwire",
           "available", "due_ns", "tripped", "with_page"]

EXPORT = "__stockade_tripwire"  # the page's export: the host looks its address up by it
# The module's start function, exported instead of run by instantiation: it runs once
# the tripwire is armed, so a start function that loops is stopped like any code.
START = "__stockade_start"
# Of the rewriting (part of the AoT cache key): here, so a key is made without loading it.
VERSION = 4
# Seconds a run's tripwire fires after its deadline: the set-up between the deadline's
# start and the guest's first instruction (store, WASI, instance), as the epoch ticker's
# tick of grace (`engine.ticker.TICK_SECONDS`).
DEADLINE_GRACE = 0.005
# What a run raises (RuntimeError) when the native library's deadline thread cannot start.
NO_DEADLINE_THREAD = "cannot start the thread that keeps run deadlines"


def with_page(memories: int, tripwire: bool) -> int:
    """A count of memories with a `tripwire`'s page, a memory of the instance's own, on
    every backend's store limits and reservations (-1, no limit, stays none)."""
    return memories + 1 if tripwire and memories >= 0 else memories


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
    """One run's tripwire, a `TripState` the native library orders. `fire()` (the
    library's deadline thread, or a cancellation) revokes the page as soon as the run has
    `arm`ed it with the page's address; `disarm()` (the run's thread, before its store is
    dropped) gives the page back; a page is never revoked after it was given back (the
    memory may then belong to another run). `due(deadline)` has the library's thread fire
    it then, `undue()` calls that off (before `disarm`). `reset()` readies it for a new
    run, before that run's deadline is set. `fired` tells the run's verdict that a trap
    after it was the deadline's. Raises RuntimeError without the native library
    (`available`)."""

    __slots__ = ("state", "address", "_fire", "_arm", "_disarm", "_due", "_undue")

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
        self._due, self._undue = functions["due"], functions["undue"]

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

    def due(self, deadline: float) -> None:
        """Fire at `deadline` (`time.monotonic()` seconds) plus `DEADLINE_GRACE`, unless
        `undue` comes first. Raises RuntimeError when the library's deadline thread
        cannot be started."""
        if self._due(self.address, due_ns(deadline)) != 0:
            raise RuntimeError(NO_DEADLINE_THREAD)

    def undue(self) -> None:
        """The run is over: its deadline no longer fires it (once this returns)."""
        self._undue(self.address)

    def __del__(self) -> None:
        # Last resort (an interrupt in a run's `finally`): the deadline list never keeps
        # a pointer to freed memory.
        if self.state.due.listed:
            self._undue(self.address)

    def reset(self) -> None:
        """Ready for a new run: not fired (nothing is armed once a run disarmed). Only
        while no other party holds it: its last run disarmed it, and that run's deadline
        was called off (the library fires under the lock `undue` takes), so a plain
        store suffices: a call into the library costs a tenth of a hello."""
        self.state.fired = 0


def due_ns(deadline: float) -> int:
    """When a run with `deadline` (`time.monotonic()` seconds, CLOCK_MONOTONIC) is
    tripped, in nanoseconds: `DEADLINE_GRACE` later, as an epochs engine's deadline
    rounds up to the ticker's tick plus one, so a guest's own clock, which starts after
    the set-up, never shows it stopped early."""
    # Clamped to the C side's int64: ctypes would wrap a deadline centuries away to one
    # already past (or, negative, to none).
    ns = (deadline + DEADLINE_GRACE) * 1e9
    return _FOREVER_NS if ns >= _FOREVER_NS else max(0, int(ns))


_FOREVER_NS = (1 << 63) - 1  # a later deadline never comes


def tripped(ending: Ending, trip: Tripwire | None) -> Ending:
    """A run's ending once its tripwire is known: a trap after it fired is the guest's
    next load of the revoked page, its deadline."""
    if trip is not None and trip.fired and ending.outcome is Outcome.TRAP:
        return TIMED_OUT
    return ending

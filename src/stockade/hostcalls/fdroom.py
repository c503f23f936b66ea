"""`DescriptorRoom`: the descriptors a process's in-process runs may still open, shared.

A run's descriptor cap (`Meter.fd_cap`) was what the process could still open as the run
started: concurrent runs each claimed the same room and together took the process past
its RLIMIT_NOFILE, so the later ones' opens failed (EIO to the guest, outcome `exited`)
instead of meeting their quota, and a gateway worker's new connections were reset
(found by review). A run now books descriptors from one ledger as it opens them,
doubling what it booked each time (by `BOOKING` at least): what the process may still
open less what the other live runs booked and do not hold yet, and, where the process
sets a share (`limit`), within that many descriptors for all runs together and an even
part of it for each of the runs it may make at once (a gateway worker keeps the rest
for its connections and itself, and one tenant's run holding files cannot leave
another's none). A run that cannot book what it opens meets `fd_quota`. Booking as it
opens, not its whole cap as it starts: runs that open a few files each are not refused
for what others might open (found by the fix's review: half of a pool of eight stopped
before their first open). Doubling: a run opening thousands of files looks at
/proc/self/fd, which costs as many entries as the process holds, a dozen times (by 16,
it took 32 ms a booking with 16,000 open). A run that was never closed leaves the
ledger when it is collected.
"""

from __future__ import annotations

import os
import resource
import threading
import weakref
from typing import Protocol

__all__ = ["DescriptorRoom", "DESCRIPTORS", "TRANSIENT_FDS", "BOOKING"]

# Descriptors a host call may open for a moment beyond the ones it keeps (lookups, the
# parent walk of a symlink check): left free under the process's own limit.
TRANSIENT_FDS = 8
BOOKING = 16  # descriptors booked at least at a time (a look at /proc/self/fd each)


class Holder(Protocol):
    """A run's meter as the ledger sees it: its cap beyond stdio, what it booked, and
    what it holds now (`fds_held`)."""

    fd_cap: int
    fd_booked: int

    def fds_held(self) -> int: ...


def _host_room() -> int:
    """Descriptors this process may still open under its RLIMIT_NOFILE soft limit (none
    when it cannot even list them: the listing takes a descriptor)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    try:
        return soft - len(os.listdir("/proc/self/fd")) - TRANSIENT_FDS
    except OSError:  # EMFILE: no room, and the run meets its quota
        return 0


class DescriptorRoom:
    """The ledger of one process's live runs (see the module docstring)."""

    def __init__(self) -> None:
        self.share: int | None = None  # descriptors all runs may hold together
        self.each: int | None = None  # and one of them
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[Holder] = weakref.WeakSet()

    def limit(self, share: int, runs: int) -> None:
        """Runs hold at most `share` descriptors together, `share // runs` each (`runs`:
        how many the process makes at once)."""
        self.share, self.each = share, max(1, share // max(1, runs))

    def book(self, holder: Holder, needed: int) -> int:
        """Book for `holder` (a live run from now until `release`) room to hold at least
        `needed` descriptors beyond stdio, `BOOKING` more when there is room, within its
        cap; returns what it has booked now, which is less than `needed` when the
        process or the share has not that room."""
        room = _host_room()  # outside the lock: it costs as many entries as are open
        with self._lock:
            self._live.add(holder)
            others = [other for other in self._live if other is not holder]
            held = holder.fds_held()
            # Twice what it booked (at least `BOOKING` more): a run opening thousands of
            # files looks at /proc/self/fd a dozen times, not once per 16 opens.
            wanted = min(holder.fd_cap - 3,
                         max(needed, holder.fd_booked + max(BOOKING, holder.fd_booked)))
            free = room - sum(max(0, other.fd_booked - other.fds_held()) for other in others)
            booked = min(wanted, held + max(0, free))
            if self.share is not None and self.each is not None:
                booked = min(booked, self.each,
                             self.share - sum(other.fd_booked for other in others))
            holder.fd_booked = max(holder.fd_booked, booked)
            return holder.fd_booked

    def release(self, holder: Holder) -> None:
        """`holder`'s run has ended: what it booked is free again. Safe twice."""
        with self._lock:
            self._live.discard(holder)


DESCRIPTORS = DescriptorRoom()  # the process's

"""`DescriptorRoom`: the descriptors a process's in-process runs may still open, shared.

A run's descriptor cap (`Meter.fd_cap`) was what the process could still open as the run
started: concurrent runs each claimed the same room and together took the process past
its RLIMIT_NOFILE, so the later ones' opens failed (EIO to the guest, outcome `exited`)
instead of meeting their quota, and a gateway worker's new connections were reset
(found by review). A run now takes its room from one ledger: what the process may still
open less what the live runs may still open (their caps less what they hold), and,
where the process sets a share (`limit`), within that many descriptors for all runs
together and an even part of it for each of the runs it may make at once (a gateway
worker keeps the rest for its connections and itself, and one tenant's run holding
files cannot leave another's none). A run that was never closed leaves the ledger when
it is collected.
"""

from __future__ import annotations

import os
import resource
import threading
import weakref
from typing import Protocol

__all__ = ["DescriptorRoom", "DESCRIPTORS", "TRANSIENT_FDS"]

# Descriptors a host call may open for a moment beyond the ones it keeps (lookups, the
# parent walk of a symlink check): left free under the process's own limit.
TRANSIENT_FDS = 8


class Holder(Protocol):
    """A run's meter as the ledger sees it: its cap (stdio counted) and what it holds."""

    fd_cap: int

    def fds_held(self) -> int: ...


def _host_room() -> int:
    """Descriptors this process may still open under its RLIMIT_NOFILE soft limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return soft - len(os.listdir("/proc/self/fd")) - TRANSIENT_FDS


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

    def cap(self, holder: Holder, wanted: int, held: int) -> int:
        """The cap (stdio counted) of a run wanting `wanted` and holding `held` now
        (its directories), taken from the ledger: `holder` counts among the live runs
        (its `fd_cap` set to the answer) until `release`."""
        with self._lock:
            live = list(self._live)
            room = _host_room() - sum(max(0, other.fd_cap - 3 - other.fds_held())
                                      for other in live)
            if self.share is not None and self.each is not None:
                room = min(room, self.each - held, self.share - held
                           - sum(max(0, other.fd_cap - 3) for other in live))
            holder.fd_cap = min(wanted, 3 + held + max(0, room))
            self._live.add(holder)
        return holder.fd_cap

    def release(self, holder: Holder) -> None:
        """`holder`'s run has ended: what it could open is free again. Safe twice."""
        with self._lock:
            self._live.discard(holder)


DESCRIPTORS = DescriptorRoom()  # the process's

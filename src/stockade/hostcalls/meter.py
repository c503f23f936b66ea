"""`Meter`: per-run accounting of owned host calls, quotas, descriptors and output."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..policy import Limits
from ..policy.units import format_size
from ..result import GuestStopped, Outcome
from .descriptors import Descriptors, FdEntry
from .fdroom import DESCRIPTORS
from .poll import Stoppable

__all__ = ["Meter"]


class Meter(Stoppable):
    """The budgets of one run, charged by the interposed WASI calls.

    Every method that finds a limit exceeded raises `GuestStopped` with the outcome;
    the sandbox turns that into the run's `Result`. Deadlines use `time.monotonic()`.
    The meter holds host descriptors of the guest's directories (`fds`): `close()` them
    when the run ends (safe twice). `preopens` are the (host directory, writable) pairs
    the run's WASI context must preopen, in this order (descriptors 3, 4, ...).
    """

    def __init__(
        self,
        limits: Limits,
        deadline: float | None,
        preopens: list[tuple[Path, bool]],
        stdin: bytes = b"",
    ) -> None:
        self.limits = limits
        self.deadline = deadline
        self.wake = threading.Event()  # set by `stop_now`: a sleeping host call returns
        # The guest's monotonic clock counts from its WASI context's creation, just
        # before the meter (the owned poll_oneoff converts absolute times with it).
        self.clock_base = time.monotonic_ns()
        self.counts: dict[str, int] = {}
        self._caps = dict(limits.hostcall_caps)
        self.total = 0
        # What stopped the guest inside a host call (a GuestStopped, or a failure of the
        # host call itself): the trap the guest sees only says that it was stopped.
        self.failure: BaseException | None = None
        self.syncs = 0
        self.stdin = stdin
        self.stdin_pos = 0
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_truncated = False
        self.stderr_truncated = False
        self.stdio_owned = {0: True, 1: True, 2: True}
        self.bytes_written = 0
        self.files_created = 0
        # Preopened directories get descriptors 3, 4, ... in order.
        self.preopens = tuple(preopens)
        self.fds = Descriptors(preopens)
        # The cap counts what the host holds (wasmtime's descriptors and Stockade's own);
        # what it opens is booked from the process's room beside its other runs
        # (`fdroom`): the quota, not EIO, comes first.
        self.fd_cap = limits.max_open_files
        self.fd_booked = 0  # beyond stdio
        self.guest_opened = 0
        self.trampoline: dict[str, object] | None = None
        self.memory: object | None = None  # the guest's memory export, once looked up

    # -- budget -------------------------------------------------------------------

    def charge(self, name: str) -> None:
        """Count one call of `name`; stop the guest past the budget or the deadline."""
        count = self.counts[name] = self.counts.get(name, 0) + 1
        self.total += 1
        cap = self._caps.get(name)
        if cap is not None and count > cap:
            raise GuestStopped(Outcome.HOSTCALL_LIMIT, f"cap of {cap} {name} calls exhausted")
        budget = self.limits.max_hostcalls
        if budget is not None and self.total > budget:
            raise GuestStopped(
                Outcome.HOSTCALL_LIMIT, f"host-call budget of {budget} calls exhausted at {name}"
            )
        self.check_deadline("in a host call")

    def check_deadline(self, doing: str) -> None:
        """Stop the guest with `timeout` once the deadline has passed (`doing` says what
        it was doing): for host calls whose own work may outlast the run."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise GuestStopped(Outcome.TIMEOUT, f"wall-clock timeout ({doing})")

    def remaining_time(self) -> float | None:
        """Seconds until the deadline (None when there is none)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def allow_sync(self) -> bool:
        """Whether an fd_sync/fd_datasync may reach the disk; False means answer success
        without syncing. Stops the guest past a `limit:N` budget."""
        allowed = self.limits.sync_limit()
        if allowed is None:
            return True
        if allowed == 0:
            return False
        if self.syncs >= allowed:
            raise GuestStopped(Outcome.HOSTCALL_LIMIT, f"sync budget of {allowed} calls exhausted")
        self.syncs += 1
        return True

    # -- output -------------------------------------------------------------------

    def output_room(self) -> int:
        """Bytes stdout and stderr together may still take under the cap."""
        return max(self.limits.max_output - len(self.stdout) - len(self.stderr), 0)

    def capture(self, fd: int, data: bytes) -> None:
        """Keep guest stdout/stderr up to the shared cap; stop the guest past the cap."""
        room = self.output_room()
        buffer = self.stdout if fd == 1 else self.stderr
        buffer += data[:room]
        if len(data) > room:
            self.stop_output(fd)

    def stop_output(self, fd: int) -> None:
        """Stop the guest: it wrote to `fd` (1 or 2) past the output cap."""
        if fd == 1:
            self.stdout_truncated = True
        else:
            self.stderr_truncated = True
        cap = self.limits.max_output
        raise GuestStopped(Outcome.OUTPUT_LIMIT, f"output cap of {format_size(cap)} reached")

    def read_stdin(self, size: int) -> bytes:
        """The next `size` bytes of standard input (empty at the end)."""
        chunk = self.stdin[self.stdin_pos : self.stdin_pos + size]
        self.stdin_pos += len(chunk)
        return chunk

    # -- disk ---------------------------------------------------------------------

    def reserve_bytes(self, size: int) -> None:
        """Charge a write of `size` bytes to the disk quota before it happens (bytes
        written plus any hole the write or a resize leaves: the apparent size it adds)."""
        quota = self.limits.disk_quota
        if self.bytes_written + size > quota:
            raise GuestStopped(
                Outcome.DISK_QUOTA,
                f"disk quota of {format_size(quota)} reached "
                f"({format_size(self.bytes_written)} written)",
            )

    def wrote(self, size: int) -> None:
        """Record bytes actually written; stop the guest when they pass the quota (a
        charge `reserve_bytes` missed must not go unnoticed)."""
        self.bytes_written += size
        if self.bytes_written > self.limits.disk_quota:
            self.reserve_bytes(0)

    def reserve_file(self) -> None:
        """Charge one new file, directory or link before it is created."""
        if self.files_created + 1 > self.limits.max_files:
            raise GuestStopped(
                Outcome.FILE_QUOTA, f"new-file quota of {self.limits.max_files} reached"
            )

    # -- descriptors --------------------------------------------------------------

    def reserve_fd(self) -> None:
        """Stop the guest when an open could take the host past the descriptor cap: the
        guest's descriptors (stdio counted) and Stockade's own behind them, plus the
        two a new open may add; or past what the process has room for beside its other
        runs (`fdroom`)."""
        needed = self.fds_held() + 2
        if 3 + needed > self.fd_cap:
            raise GuestStopped(Outcome.FD_QUOTA, f"descriptor cap of {self.fd_cap} reached")
        if needed > self.fd_booked and DESCRIPTORS.book(self, needed) < needed:
            raise GuestStopped(Outcome.FD_QUOTA, f"descriptor cap of {3 + self.fd_booked} "
                               "reached (the process's other runs hold the rest of its "
                               "descriptors)")

    def opened(self, fd: int, entry: FdEntry) -> None:
        """Record a descriptor returned by path_open."""
        self.fds.put(fd, entry)
        self.guest_opened += 1

    def closed(self, fd: int) -> None:
        """Record a descriptor closed by the guest."""
        self.fds.put(fd, None)
        if fd in self.stdio_owned:
            self.stdio_owned[fd] = False

    def renumbered(self, source: int, target: int) -> None:
        """Record fd_renumber(source, target): target now refers to source's file."""
        entry = self.fds.pop(source, None)
        if target in self.stdio_owned:
            self.stdio_owned[target] = False
        self.fds.put(target, entry)

    def fds_held(self) -> int:
        """Host descriptors held for the guest's now (`Descriptors.held`). Also read by
        another run's thread (`fdroom`): a count the run's own thread changed midway is
        taken again (the room keeps `TRANSIENT_FDS` for one off by a call's worth)."""
        while True:
            try:
                return self.fds.held()
            except RuntimeError:  # the dictionary changed size during the count
                continue

    def close(self) -> None:
        """Release the host descriptors held for the guest's, and its room. Safe twice."""
        self.fds.close()
        DESCRIPTORS.release(self)

"""Quotas of one server, per function and per tenant: concurrency, request rate, CPU time.

Every worker process enforces the manifest's *whole* quota against one shared state,
so the totals hold however many workers serve (no per-worker shares that round up):

    QuotaStore (a directory shared by the supervisor's workers, or this process only)
    └── QuotaCell per limiter key: a small file mapped into every worker, guarded by
        flock; it holds each worker's in-flight count and the rate and CPU buckets.

In-flight counts are kept per worker index, so a worker that dies holding slots gives
them back when its replacement (same index) opens the cell. A `Limiter` either takes a
slot or raises QuotaExceeded with the seconds after which a retry can succeed;
`release` returns the slot and charges the guest CPU time the invocation used, once.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import QuotaExceeded, StateError

__all__ = ["Quota", "Limiter", "QuotaStore", "QuotaCell", "MAX_WORKERS"]



@dataclass(frozen=True)
class Quota:
    """Limits on a function or a tenant; None means unlimited.

    `concurrency` invocations at once, `rate` requests per second with bursts of `burst`
    (default: one second's worth), `cpu_per_minute` seconds of guest CPU time per minute.
    """

    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None
    cpu_per_minute: float | None = None

    @property
    def unlimited(self) -> bool:
        """True when this quota limits nothing."""
        return self.concurrency is None and self.rate is None and self.cpu_per_minute is None

    @property
    def bucket(self) -> float:
        """The requests a burst may hold: `burst`, else one second's worth (at least 1)."""
        return float(self.burst or max(1.0, self.rate or 1.0))


Clock = Callable[[], float]
MAX_WORKERS = 64  # `[server] workers` is at most this
# initialised flag, then rate level and stamp, CPU level and stamp, CPU charged in total
_HEAD = struct.Struct("<Q5d")
_ACTIVE = struct.Struct(f"<{MAX_WORKERS}i")
_SIZE = 4096


class QuotaCell:
    """The shared state of one quota. Use as a context manager to hold its lock; the
    properties read and write the mapped record (only while locked)."""

    def __init__(self, buffer: mmap.mmap, fd: int | None, worker: int) -> None:
        self._buffer = buffer
        self._fd = fd
        self.worker = worker

    def __enter__(self) -> QuotaCell:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def head(self) -> tuple[int, float, float, float, float, float]:
        """(initialised, rate level, rate stamp, CPU level, CPU stamp, CPU charged)."""
        return _HEAD.unpack_from(self._buffer, 0)

    def set_head(self, rate: float, rate_stamp: float, cpu: float, cpu_stamp: float,
                 charged: float) -> None:
        """Store the buckets (and mark the cell initialised)."""
        _HEAD.pack_into(self._buffer, 0, 1, rate, rate_stamp, cpu, cpu_stamp, charged)

    def active(self) -> int:
        """In-flight invocations over every worker."""
        return sum(_ACTIVE.unpack_from(self._buffer, _HEAD.size))

    def add_active(self, delta: int) -> None:
        """Change this worker's in-flight count by `delta`."""
        offset = _HEAD.size + 4 * self.worker
        (count,) = struct.unpack_from("<i", self._buffer, offset)
        struct.pack_into("<i", self._buffer, offset, max(0, count + delta))

    def reset_own(self) -> None:
        """Forget this worker index's in-flight count (a replaced worker's leftovers)."""
        struct.pack_into("<i", self._buffer, _HEAD.size + 4 * self.worker, 0)

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return bool(self._buffer.closed)

    def close(self) -> None:
        """Unmap and close. Safe twice."""
        if not self._buffer.closed:
            self._buffer.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class QuotaStore:
    """Where quota state lives: files in `directory` shared by every worker of one
    server (worker `index` of at most MAX_WORKERS), or memory of this process only when
    `directory` is None."""

    def __init__(self, directory: Path | None = None, index: int = 0) -> None:
        if not 0 <= index < MAX_WORKERS:
            raise ValueError(f"worker index {index} out of range 0-{MAX_WORKERS - 1}")
        self.directory = directory
        self.index = index
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def cell(self, key: str) -> QuotaCell:
        """The cell of quota `key` (made on first use), this worker's old slots cleared."""
        if self.directory is None:
            return QuotaCell(mmap.mmap(-1, _SIZE), None, self.index)
        # Keys are `function:NAME` / `tenant:NAME`, names from a strict alphabet.
        path = self.directory / key.replace(":", "-")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zero-filled: not initialised, nothing in flight
            fcntl.flock(fd, fcntl.LOCK_UN)
            cell = QuotaCell(mmap.mmap(fd, _SIZE), fd, self.index)
        except BaseException:
            os.close(fd)
            raise
        with cell:
            cell.reset_own()
        return cell


def _refill(level: float, stamp: float, now: float, rate: float, capacity: float) -> float:
    return min(capacity, level + max(0.0, now - stamp) * rate)


class Limiter:
    """The live state of one quota; `label` (e.g. `tenant acme`) appears in refusals.

    The whole quota holds across every worker sharing `cell`'s store. The rate bucket
    holds `burst` requests (default: one second's worth) refilled at `rate` per second;
    the CPU bucket holds `cpu_per_minute` seconds refilled over a minute, and may go
    negative when a run's CPU time (known only afterwards) exceeds what was left.
    """

    def __init__(self, label: str, quota: Quota, clock: Clock = time.monotonic,
                 cell: QuotaCell | None = None) -> None:
        self.label = label
        self._clock = clock
        self._cell = cell if cell is not None else QuotaStore().cell(label)
        self.quota = quota
        # Slots this process took and has not given back: a retired limiter (its
        # routes replaced) is closed when they are, not under a request holding one.
        self.leases = 0
        self._retired = False
        self._closing = threading.Lock()
        self.update(quota)

    @property
    def closed(self) -> bool:
        """True once closed (`close`, or retired with no lease left)."""
        return self._cell.closed

    def retire(self) -> None:
        """No route uses this limiter any more: close it now, or when the last slot
        taken from it is given back (requests routed before a reload finish)."""
        self._retired = True
        self._close_unused()

    def revive(self) -> bool:
        """Take a retiring limiter back into use (a reload naming it again): False when
        it is already closed."""
        with self._closing:
            if self._cell.closed:
                return False
            self._retired = False
            return True

    def _close_unused(self) -> None:
        with self._closing:
            if self._retired and not self.leases:
                self._cell.close()

    def update(self, quota: Quota) -> None:
        """Apply a new quota (manifest reload), keeping in-flight counts and balances
        (a balance above a smaller new capacity is cut to it)."""
        self.quota = quota
        # True when this quota limits nothing (an attribute: read twice per request).
        self.unlimited = quota.unlimited
        self._burst = quota.bucket
        self._cpu_capacity = quota.cpu_per_minute or 0.0
        with self._cell as cell:
            initialised, rate, rate_stamp, cpu, cpu_stamp, charged = cell.head()
            now = self._clock()
            if not initialised:
                rate, rate_stamp, cpu, cpu_stamp = self._burst, now, self._cpu_capacity, now
            cell.set_head(min(rate, self._burst), rate_stamp, min(cpu, self._cpu_capacity),
                          cpu_stamp, charged)

    @property
    def active(self) -> int:
        """Invocations in flight, over every worker (not counted for an unlimited quota)."""
        with self._cell as cell:
            return cell.active()

    @property
    def cpu_charged(self) -> float:
        """Guest CPU seconds charged to this quota so far, over every worker."""
        with self._cell as cell:
            return cell.head()[5]

    def admit(self) -> bool:
        """Take a slot: True when one was counted (an unlimited quota counts none), for
        `release`. Raises QuotaExceeded (with the seconds to wait) when the concurrency
        limit is reached, the rate bucket is empty or the CPU budget is spent."""
        quota = self.quota
        if self.unlimited:
            return False  # nothing to count: no lock, no shared write on the hot path
        if self._cell.closed:
            # Retired: routed before a reload dropped its function or tenant. Refused, not
            # admitted uncounted: requests held open across a reload and back ran beside
            # the new limiter's, past `concurrency = 1` (found by review).
            raise StateError(f"{self.label}: the manifest was reloaded since this request "
                             "was routed; send it again", 1.0)
        with self._cell as cell:
            limit = quota.concurrency
            if limit is not None and cell.active() >= limit:
                raise QuotaExceeded(f"{self.label}: {limit} concurrent invocations at most",
                                      1.0, limit="concurrency")
            _, rate, rate_stamp, cpu, cpu_stamp, charged = cell.head()
            now = self._clock()
            if quota.cpu_per_minute is not None:
                per_second = quota.cpu_per_minute / 60.0
                cpu = _refill(cpu, cpu_stamp, now, per_second, self._cpu_capacity)
                if cpu < 0:
                    raise QuotaExceeded(
                        f"{self.label}: CPU budget of {quota.cpu_per_minute:g} s per minute "
                        "spent", -cpu / per_second, limit="cpu")
            if quota.rate is not None:
                rate = _refill(rate, rate_stamp, now, quota.rate, self._burst)
                if rate < 1.0:
                    raise QuotaExceeded(f"{self.label}: more than {quota.rate:g} requests "
                                          "per second", (1.0 - rate) / quota.rate,
                                          limit="rate")
                rate -= 1.0
            cell.set_head(rate, now, cpu, now, charged)
            cell.add_active(1)
        self.leases += 1
        return True

    def release(self, cpu_seconds: float = 0.0, taken: bool = True) -> None:
        """Return the slot `admit` took (`taken`: what it returned) and charge
        `cpu_seconds` of guest CPU. Decided by the admission, not by the quota now: a
        reload between the two must neither drop a counted slot nor free an uncounted
        one (either left the count off by one for the worker's life)."""
        if not taken or self._cell.closed:  # closed: the state was (server shutdown)
            return
        with self._cell as cell:
            cell.add_active(-1)
            if cpu_seconds > 0:
                _, rate, rate_stamp, cpu, cpu_stamp, charged = cell.head()
                now = self._clock()
                if self.quota.cpu_per_minute is not None:
                    cpu = _refill(cpu, cpu_stamp, now, self.quota.cpu_per_minute / 60.0,
                                  self._cpu_capacity) - cpu_seconds
                cell.set_head(rate, rate_stamp, cpu, now, charged + cpu_seconds)
        self.leases -= 1
        if self._retired:
            self._close_unused()

    def close(self) -> None:
        """Release the shared state. Safe twice."""
        self._cell.close()

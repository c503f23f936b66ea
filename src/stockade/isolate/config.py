"""`IsolationConfig`: how much of the OS a worker may use, on top of the policy's limits.

The policy says what the guest may use (linear memory, time, output, disk); a worker
also holds an interpreter, wasmtime and compiled code. These settings size the OS
limits around that: the cgroup memory is the guest's memory plus `memory_overhead`,
the CPU seconds are the timeout plus `grace` on every core the worker may use.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from ..compilecost import load_deadline
from ..errors import UsageError
from ..policy import Policy

__all__ = ["IsolationConfig", "MiB"]

MiB = 1024**2


@dataclass(frozen=True)
class IsolationConfig:
    """Settings of isolated workers. Sizes in bytes, times in seconds, `None` disables.

    - `grace`: added to the policy timeout before the parent kills a silent worker.
    - `start_timeout`: how long a new worker may take to harden itself and answer.
    - `load_timeout`: how long loading/compiling a module may take before the guest
      starts (a compile bomb is stopped here); `None` for no bound; by default it
      follows the policy's compile budget (`compilecost.load_deadline`).
    - `memory_overhead`: the worker's own memory on top of the guest's linear memory,
      charged to the cgroup; `memory_limit` replaces the sum when set. A run handed a
      standard input past 16 MiB is allowed twice its size on top, for that run.
    - `cpu_quota`: cores the cgroup lets the worker use (CFS quota); `pids_max`: tasks.
    - `io_*`: device throttling (bytes/s, operations/s) of the disks the worker writes.
    - `address_space`: RLIMIT_AS; `None` sizes it from wasmtime's measured reservation
      per linear memory (see `worker`). `address_space_headroom` covers compilation.
    - `fsize_headroom`: added to the larger of disk quota and output cap for RLIMIT_FSIZE
      (the worker writes the AoT cache).
    - `process_deadline`: a C-API worker running a policy without a fuel budget builds
      its engine without epoch interruption and ends itself at a run's deadline
      (`isolate.overrun`): compute runs without a deadline check in every loop. `False`
      keeps epochs (the guest stops itself, the worker goes on).
    - `spare_worker`: with `process_deadline`, a sandbox keeps one more worker started
      from its second run on, which takes over when a timeout ends the current one (the
      next run does not wait for a start-up). `False` saves that process.
    - `cpu_budget_runs`: a reused worker's lifetime RLIMIT_CPU hard limit, in runs.
    - `max_runs`: replace a worker after this many runs (`None`: never).
    - `uid_base`: a worker started by root runs as uid and gid `uid_base + its pid`
      (unique among live workers; the default range, from 1879048192, is one no
      distribution or container runtime assigns). `None` keeps uid 0 without
      capabilities, for hosts where that range is in use.
    - `seccomp`, `network_namespace`, `mount_namespace`, `landlock`, `cgroup`,
      `drop_capabilities` (the uid switch included): turn a protection off.
    """

    python: str = field(default_factory=lambda: sys.executable)
    grace: float = 2.0
    start_timeout: float = 30.0
    load_timeout: float | Literal["policy"] | None = "policy"
    memory_overhead: int = 384 * MiB
    memory_limit: int | None = None
    cpu_quota: float | None = 1.0
    pids_max: int = 64
    io_write_bps: int | None = 64 * MiB
    io_write_iops: int | None = 2000
    io_read_bps: int | None = None
    io_read_iops: int | None = None
    address_space: int | None = None
    address_space_headroom: int = 1024 * MiB
    fsize_headroom: int = 256 * MiB
    nofile_overhead: int = 64
    process_deadline: bool = True
    spare_worker: bool = True
    cpu_budget_runs: int = 16
    max_runs: int | None = None
    seccomp: bool = True
    network_namespace: bool = True
    cgroup: bool = True
    drop_capabilities: bool = True
    mount_namespace: bool = True
    landlock: bool = True
    uid_base: int | None = 0x7000_0000

    def __post_init__(self) -> None:
        if self.grace < 0:
            raise UsageError(f"isolation grace must be >= 0 seconds, got {self.grace}")
        if self.cpu_quota is not None and self.cpu_quota <= 0:
            raise UsageError(f"isolation cpu_quota must be > 0 cores, got {self.cpu_quota}")
        if self.pids_max < 8:
            raise UsageError(f"isolation pids_max must be >= 8, got {self.pids_max}")
        if self.cpu_budget_runs < 1:
            raise UsageError("isolation cpu_budget_runs must be >= 1")
        if self.max_runs is not None and self.max_runs < 1:
            raise UsageError("isolation max_runs must be >= 1 or None")
        if self.uid_base is not None and not 0 < self.uid_base < 2**32 - 2**23:
            raise UsageError(f"isolation uid_base must leave room for every pid below "
                             f"2**32, got {self.uid_base}")

    # -- figures derived from a policy ------------------------------------------------

    def cgroup_memory(self, policy: Policy) -> int:
        """Bytes the worker's cgroup may hold: the guest's memory plus the overhead."""
        if self.memory_limit is not None:
            return self.memory_limit
        return policy.limits.max_memory * policy.limits.max_memories + self.memory_overhead

    def run_cpu_seconds(self, policy: Policy) -> int | None:
        """CPU seconds one run may use (RLIMIT_CPU step), or None when the policy has no
        timeout. Counts every core the worker may use: threads add up CPU time."""
        timeout = policy.limits.timeout
        if timeout is None:
            return None
        return max(1, math.ceil((timeout + self.grace) * self._cores()))

    def load_seconds(self, policy: Policy) -> float | None:
        """Seconds loading (compiling) one module may take, or None (no bound): by
        default the policy's compile budget and slack, so a short timeout buys a short
        compile and a long one still loads CPython."""
        if self.load_timeout == "policy":
            return load_deadline(policy.limits.timeout)
        return self.load_timeout

    def load_cpu_seconds(self, policy: Policy) -> int | None:
        """CPU seconds loading and compiling one module may use, or None (no bound)."""
        seconds = self.load_seconds(policy)
        if seconds is None:
            return None
        return max(1, math.ceil(seconds * self._cores()))

    def _cores(self) -> float:
        return self.cpu_quota if self.cpu_quota is not None else float(os.cpu_count() or 1)

    def fsize(self, policy: Policy) -> int:
        """RLIMIT_FSIZE: the largest file the worker may write."""
        limits = policy.limits
        return max(limits.disk_quota, limits.max_output) + self.fsize_headroom

    def nofile(self, policy: Policy) -> int:
        """RLIMIT_NOFILE: the guest's descriptors plus the interpreter's own."""
        return policy.limits.max_open_files + self.nofile_overhead

    def deadline(self, policy: Policy) -> float | None:
        """Seconds after the guest starts before the parent kills the worker."""
        timeout = policy.limits.timeout
        return None if timeout is None else timeout + self.grace

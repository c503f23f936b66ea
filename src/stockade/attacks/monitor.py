"""`Monitor`: watch a run from outside while it happens.

A background thread samples the process that runs the guest (resident memory,
descriptors) and the scratch disk's counters every few milliseconds; the machine's
CPU and its kernel threads' CPU are read at the start and the end. The first sample
past a stated bound marks the *breach*; the end of the run marks the *containment*,
so a limit that bites late shows as a long breach-to-containment time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .probes import (
    CpuTimes,
    DiskCounters,
    cpu_times,
    disk_counters,
    kernel_threads_cpu,
    kernel_threads_delta,
    process_sample,
)

__all__ = ["Watch", "Monitor", "Observed"]


@dataclass(frozen=True)
class Watch:
    """Bounds the monitor checks while sampling (None: not checked): resident memory
    growth and descriptors in bytes and counts, device flushes and bytes written, and
    the run's duration in seconds."""

    rss_growth: int | None = None
    fds: int | None = None
    flushes: int | None = None
    device_bytes: int | None = None
    wall: float | None = None


@dataclass(frozen=True)
class Observed:
    """What the monitor saw: process figures relative to the start of the run."""

    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    rss_before: int
    rss_peak: int
    fds_before: int
    fds_peak: int
    machine: CpuTimes
    kernel_threads_s: float
    disk: DiskCounters | None
    disk_name: str | None
    breach_s: float | None
    breach: str | None
    samples: int


class Monitor:
    """Samples the process `pid()` returns (it may change, e.g. a replaced worker) and
    the disk `disk`, every `interval` seconds, from `start()` to `stop()`.

    `pid` may return None while no process runs the guest. Use as a context manager or
    call `start()` then `stop()` once.
    """

    def __init__(self, pid: Callable[[], int | None], disk: str | None, watch: Watch,
                 interval: float = 0.01) -> None:
        self._pid = pid
        self._disk = disk
        self._watch = watch
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stockade-attack-monitor",
                                        daemon=True)
        self._rss0 = self._rss_peak = self._fds0 = self._fds_peak = 0
        # per process seen: (user, system) at its first and at its latest sample
        self._cpu: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}
        self._breach_at: float | None = None
        self._breach: str | None = None
        self._samples = 0

    def start(self) -> Monitor:
        """Take the starting readings and begin sampling."""
        # Write back what the machine already holds dirty (a compile cache written just
        # before, say): the window must count the device work of this run, not earlier.
        os.sync()
        self._t0 = time.monotonic()
        self._machine0 = cpu_times()
        self._kthreads0 = kernel_threads_cpu()
        self._disk0 = disk_counters(self._disk) if self._disk else None
        self._sample(first=True)
        self._thread.start()
        return self

    def stop(self) -> Observed:
        """Stop sampling, take the final readings and return what was seen."""
        self._sample()
        self._done.set()
        self._thread.join()
        wall = time.monotonic() - self._t0
        disk = None
        if self._disk and self._disk0 is not None:
            disk = disk_counters(self._disk).minus(self._disk0)
            self._check("device flushes", disk.flushes, self._watch.flushes, time.monotonic())
            self._check("device writes", disk.bytes_written, self._watch.device_bytes,
                        time.monotonic())
        user = sum(last[0] - first[0] for first, last in self._cpu.values())
        system = sum(last[1] - first[1] for first, last in self._cpu.values())
        return Observed(
            wall_s=wall, cpu_user_s=max(user, 0.0), cpu_sys_s=max(system, 0.0),
            rss_before=self._rss0, rss_peak=self._rss_peak, fds_before=self._fds0,
            fds_peak=self._fds_peak, machine=cpu_times().minus(self._machine0),
            kernel_threads_s=kernel_threads_delta(self._kthreads0, kernel_threads_cpu()), disk=disk,
            disk_name=self._disk,
            breach_s=None if self._breach_at is None else self._breach_at - self._t0,
            breach=self._breach, samples=self._samples,
        )

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._done.is_set():
            self.stop()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        now = time.monotonic()
        pid = self._pid()
        sample = process_sample(pid) if pid is not None else None
        self._samples += 1
        if sample is not None and pid is not None:
            if first or not self._rss0:
                self._rss0 = self._rss_peak = sample.rss
                self._fds0 = self._fds_peak = sample.fds
            self._rss_peak = max(self._rss_peak, sample.rss)
            self._fds_peak = max(self._fds_peak, sample.fds)
            now_cpu = (sample.user, sample.system)
            self._cpu[pid] = (self._cpu.get(pid, (now_cpu, now_cpu))[0], now_cpu)
            self._check("memory", self._rss_peak - self._rss0, self._watch.rss_growth, now)
            self._check("descriptors", self._fds_peak - self._fds0, self._watch.fds, now)
        if self._disk and self._disk0 is not None and (
                self._watch.flushes is not None or self._watch.device_bytes is not None):
            disk = disk_counters(self._disk).minus(self._disk0)
            self._check("device flushes", disk.flushes, self._watch.flushes, now)
            self._check("device writes", disk.bytes_written, self._watch.device_bytes, now)
        self._check("time", now - self._t0, self._watch.wall, now)

    def _check(self, what: str, value: float, bound: float | None, now: float) -> None:
        if self._breach_at is None and bound is not None and value > bound:
            self._breach_at, self._breach = now, what


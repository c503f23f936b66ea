"""Readers of the kernel's own counters, from outside any guest.

`/proc/stat` gives whole-machine CPU time (including kernel threads and iowait),
`/proc/diskstats` the writes and flushes a disk has completed, `/proc/<pid>/...` what
one process holds. All readers are cheap enough to sample every few milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuTimes",
    "DiskCounters",
    "ProcessSample",
    "SECTOR",
    "cpu_times",
    "disk_counters",
    "disk_for",
    "kernel_threads_cpu",
    "kernel_threads_delta",
    "process_sample",
]

SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class CpuTimes:
    """Whole-machine CPU seconds, summed over all cores, since boot."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float

    @property
    def kernel(self) -> float:
        """Time in the kernel or waiting on it: system, irq, softirq and iowait."""
        return self.system + self.irq + self.softirq + self.iowait

    def minus(self, earlier: CpuTimes) -> CpuTimes:
        """The difference `self - earlier`, field by field."""
        return CpuTimes(*(a - b for a, b in zip(_fields(self), _fields(earlier), strict=True)))


def _fields(times: CpuTimes) -> tuple[float, ...]:
    return (times.user, times.nice, times.system, times.idle, times.iowait, times.irq,
            times.softirq, times.steal)


def cpu_times() -> CpuTimes:
    """The `cpu` line of /proc/stat, in seconds."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:9]
    return CpuTimes(*(int(value) / _TICK for value in fields))


@dataclass(frozen=True)
class DiskCounters:
    """Completed write requests, sectors written and flush requests of one disk."""

    writes: int
    sectors_written: int
    flushes: int

    @property
    def bytes_written(self) -> int:
        """Bytes written to the device."""
        return self.sectors_written * SECTOR

    def minus(self, earlier: DiskCounters) -> DiskCounters:
        """The difference `self - earlier`."""
        return DiskCounters(self.writes - earlier.writes,
                            self.sectors_written - earlier.sectors_written,
                            self.flushes - earlier.flushes)


def disk_for(path: Path) -> str | None:
    """The whole disk (name in /proc/diskstats) holding `path`, or None for file systems
    without a block device (tmpfs, overlay). A partition maps to its disk, which is where
    the kernel counts flushes."""
    dev = os.stat(path).st_dev
    if os.major(dev) == 0:
        return None
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        node = sysfs.resolve(strict=True)
    except OSError:
        return None
    if (node / "partition").exists():
        node = node.parent
    return node.name


def disk_counters(disk: str) -> DiskCounters:
    """Counters of `disk` from /proc/diskstats (flushes are 0 on kernels before 5.5).
    Raises LookupError when the disk is not listed."""
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == disk:
                flushes = int(fields[18]) if len(fields) > 18 else 0
                return DiskCounters(int(fields[7]), int(fields[9]), flushes)
    raise LookupError(f"disk {disk!r} not in /proc/diskstats")


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process: resident memory, open descriptors, CPU seconds."""

    rss: int
    fds: int
    user: float
    system: float


def process_sample(pid: int) -> ProcessSample | None:
    """A sample of `pid`, or None when it is gone (or not readable)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            rss = int(statm.read().split()[1]) * _PAGE
        with open(f"/proc/{pid}/stat") as stat:
            # the command name may hold spaces: fields follow the last ')'
            fields = stat.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError, ValueError):
        return None
    return ProcessSample(rss, fds, int(fields[11]) / _TICK, int(fields[12]) / _TICK)


def kernel_threads_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every kernel thread (jbd2, kworkers, ksoftirqd, ...),
    by pid: the work the kernel does on nobody's behalf, which no cgroup or guest
    accounting sees. A few milliseconds to read on a typical machine."""
    threads: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[6]) & _PF_KTHREAD:
            threads[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return threads


def kernel_threads_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Kernel-thread CPU seconds spent between two readings (threads started in between
    count whole)."""
    return sum(max(cpu - before.get(pid, 0.0), 0.0) for pid, cpu in after.items())

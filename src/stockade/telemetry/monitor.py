"""The security monitor: watches running guests from outside and warns before a limit.

A `SecurityMonitor` is a `RunObserver`. One sampler thread (started with the first run)
reads, for each running guest, what can be read safely: CPU time of the thread or
worker process running it (`/proc`), resident memory growth (a worker's since its
start; this process's since the first sample), usage of its writable directories, and
elapsed time. It never touches the wasmtime Store. At 80% of the
time budget (wall or CPU) or of a disk quota, and at 94% of the memory limit (the
seed's 120 of 128 MiB), it logs a warning and appends a `stockade.monitor.warning`
event to `RunInfo.events`, which becomes a span event. When a run ends, the same
checks run once more on the exact figures of its `Result`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .log import logger
from .record import LIMIT_HIT, MONITOR_WARNING

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..observe import RunInfo
    from ..result import Result

__all__ = ["SecurityMonitor", "WarningHandler", "TIME_RATIO", "MEMORY_RATIO", "DISK_RATIO"]

TIME_RATIO = 0.8
MEMORY_RATIO = 0.94
DISK_RATIO = 0.8
_MAX_WALK = 10_000
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# the limit a run hit -> warnings that would only repeat it
_SKIP = {"timeout": ("time", "cpu"), "max_memory": ("memory",), "disk_quota": ("disk",),
         "max_files": ("files",)}
WarningHandler = Callable[["RunInfo", dict[str, object]], None]


def _cpu_seconds(stat_path: str) -> float | None:
    try:
        with open(stat_path, "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _rss_bytes(pid: int, fd: int | None = None) -> int | None:
    """Resident memory of `pid`; `fd`, when given, is its `statm` kept open (cheaper)."""
    try:
        if fd is not None:
            data = os.pread(fd, 128, 0)
        else:
            with open(f"/proc/{pid}/statm", "rb") as file:
                data = file.read()
        return int(data.split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _dir_usage(dirs: tuple[Path, ...]) -> tuple[int, int]:
    """(bytes, files) under `dirs`, stopping after `_MAX_WALK` entries. A directory
    that is a symbolic link is not followed (a taken-over worker's scratch directory
    made one to `/usr`, walked by its parent)."""
    total = files = seen = 0
    stack = [str(d) for d in dirs if not os.path.islink(d)]
    while stack and seen < _MAX_WALK:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total, files


class _Watch:
    """One running guest being watched (a plain class: cheap to define and to create)."""

    __slots__ = ("info", "thread", "stat_path", "pid", "in_process", "cpu0", "rss0", "disk0",
                 "warned", "done")

    def __init__(self, info: RunInfo, thread: int | None, stat_path: str, pid: int,
                 in_process: bool, cpu0: float, rss0: int | None,
                 disk0: tuple[int, int]) -> None:
        self.info = info
        self.thread = thread  # the guest's thread (`threading.get_ident`) in this process
        self.stat_path = stat_path  # else the worker's /proc/<pid>/stat
        self.pid = pid
        self.in_process = in_process
        self.cpu0 = cpu0
        self.rss0 = rss0
        self.disk0 = disk0
        self.warned: set[str] = set()
        self.done = False


class SecurityMonitor:
    """Samples running guests every `interval` seconds; `on_warning(info, attributes)` is
    called (from the sampler thread) for each warning raised while a guest runs."""

    def __init__(self, interval: float = 0.1, on_warning: WarningHandler | None = None) -> None:
        self.interval = interval
        self._on_warning = on_warning
        self._watches: dict[int, _Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._parked = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._statm: int | None = None

    def _own_statm(self) -> int | None:
        if self._statm is None:
            try:
                self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                return None
        return self._statm

    def _cpu(self, watch: _Watch) -> float | None:
        if watch.thread is None:
            return _cpu_seconds(watch.stat_path)
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(watch.thread))
        except OSError:  # the thread is gone
            return None

    def run_started(self, info: RunInfo) -> None:
        """Start watching the run `info` describes (called on the guest's thread)."""
        in_process = info.pid == os.getpid()
        # In this process, the guest's thread has its own CPU clock (`thread_time` here,
        # the same clock through pthread_getcpuclockid from the sampler thread); a worker
        # process is read from /proc.
        thread = threading.get_ident() if in_process else None
        stat = f"/proc/{info.pid}/stat"
        cpu0 = time.thread_time() if in_process else _cpu_seconds(stat)
        # A worker's memory baseline is read now; this process's at the first sample,
        # since reading /proc/self/statm on every short run would cost more than the run's
        # telemetry. (The exact peak comes from the Result when the run ends.)
        rss0 = None if in_process else _rss_bytes(info.pid)
        writable = info.writable_dirs
        watch = _Watch(info, thread, stat, info.pid, in_process, cpu0 or 0.0, rss0,
                       _dir_usage(writable) if writable else (0, 0))
        with self._lock:
            self._watches[id(info)] = watch
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="stockade-monitor", daemon=True)
                self._thread.start()
            # Wake the sampler only when it parked for lack of runs: waking it on every
            # short run would cost each run a thread switch.
            wake, self._parked = self._parked, False
        if wake:
            self._wake.set()

    def run_finished(self, info: RunInfo, result: Result) -> None:
        """Stop watching; check the result's exact figures (see `final_check`)."""
        self.final_check(info, result)

    def final_check(self, info: RunInfo, result: Result) -> list[dict[str, object]]:
        """Stop watching `info` and warn from `result.usage`; returns the new warnings
        (already appended to `info.events`). A limit the run actually hit is not warned.
        A run that was never watched (too short to sample, such as the gateway's inline
        runs) is checked all the same."""
        watch = None
        if self._watches:  # most runs (inline ones) were never watched: no lock
            with self._lock:  # the sampler checks `done` under the same lock
                watch = self._watches.pop(id(info), None)
                if watch is not None:
                    watch.done = True
        limits = info.policy.limits
        usage = result.usage
        # The common case first, without building the checks: far below every limit.
        timeout = limits.timeout
        if (timeout is None or max(usage.wall_ms, usage.cpu_ms) < TIME_RATIO * 1000 * timeout) \
                and usage.peak_memory_bytes < MEMORY_RATIO * limits.max_memory \
                and not usage.bytes_written and not usage.files_created:
            return []
        warned = watch.warned if watch is not None else set()
        hit = LIMIT_HIT.get(result.outcome)
        checks: list[tuple[str, float, float | None, float]] = [
            ("time", usage.wall_ms / 1000, limits.timeout, TIME_RATIO),
            ("cpu", usage.cpu_ms / 1000, limits.timeout, TIME_RATIO),
            ("memory", usage.peak_memory_bytes, limits.max_memory, MEMORY_RATIO),
            ("disk", usage.bytes_written, limits.disk_quota or None, DISK_RATIO),
            ("files", usage.files_created, limits.max_files or None, DISK_RATIO),
        ]
        skip = _SKIP.get(hit or "", ())
        new = []
        for kind, value, limit, ratio in checks:
            if kind not in skip and kind not in warned and limit and value >= ratio * limit:
                new.append(self._warning(info, warned, kind, value, limit))
        return new

    def _warning(self, info: RunInfo, warned: set[str], kind: str, value: float,
                 limit: float) -> dict[str, object]:
        warned.add(kind)
        attrs: dict[str, object] = {
            "stockade.warning.kind": kind,
            "stockade.warning.value": float(value),
            "stockade.warning.limit": float(limit),
            "stockade.warning.ratio": round(value / limit, 3),
            "faas.invocation_id": info.invocation.invocation_id,
            "time_unix_nano": time.time_ns(),
        }
        info.events.append((MONITOR_WARNING, attrs))
        logger("stockade.telemetry.monitor").warning(
            "%s: %s at %.0f%% of its limit (%g of %g)",
            info.module, kind, 100 * value / limit, value, limit)
        return attrs

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Sleep first: runs shorter than one interval are never sampled at all.
            self._stop.wait(self.interval)
            with self._lock:
                watches = list(self._watches.values())
                if not watches:
                    self._parked = True
            if not watches:
                self._wake.wait()
                self._wake.clear()
                continue
            for watch in watches:
                try:
                    self._sample(watch, len(watches))
                except Exception:  # noqa: BLE001 - the monitor never breaks a run
                    logger("stockade.telemetry.monitor").debug(
                        "monitor sample failed", exc_info=True)

    def _sample(self, watch: _Watch, running: int) -> None:
        info, limits = watch.info, watch.info.policy.limits
        readings: list[tuple[str, float, float | None, float]] = []
        if limits.timeout:
            readings.append(("time", time.time() - info.started, limits.timeout, TIME_RATIO))
            cpu = self._cpu(watch)
            if cpu is not None:
                readings.append(("cpu", cpu - watch.cpu0, limits.timeout, TIME_RATIO))
        # Process-wide RSS growth says something about one guest only when it is alone.
        if not watch.in_process or running == 1:
            rss = _rss_bytes(watch.pid, self._own_statm() if watch.in_process else None)
            if watch.rss0 is None:
                watch.rss0 = rss
            elif rss is not None:
                readings.append(("memory", rss - watch.rss0, limits.max_memory, MEMORY_RATIO))
        if info.writable_dirs and (limits.disk_quota or limits.max_files):
            used, files = _dir_usage(info.writable_dirs)
            readings.append(("disk", used - watch.disk0[0], limits.disk_quota or None,
                             DISK_RATIO))
            readings.append(("files", files - watch.disk0[1], limits.max_files or None,
                             DISK_RATIO))
        for kind, value, limit, ratio in readings:
            if limit and kind not in watch.warned and value >= ratio * limit:
                with self._lock:
                    if watch.done:
                        return
                    attrs = self._warning(info, watch.warned, kind, value, limit)
                if self._on_warning is not None:
                    self._on_warning(info, attrs)

    def close(self) -> None:
        """Stop the sampler thread; safe to call twice."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(RuntimeError):  # a start Ctrl-C interrupted: not joinable
                thread.join(timeout=2.0)
        statm, self._statm = self._statm, None
        if statm is not None:
            os.close(statm)

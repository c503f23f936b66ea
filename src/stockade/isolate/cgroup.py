"""A control group per worker: memory, CPU quota, task count and disk throttling.

Version 2 is used when its controllers are delegated to the cgroup this process is in
(they can be enabled for a child); otherwise version 1, one directory per controller
hierarchy. Worker cgroups are created *below* this process's own cgroups, so any limit
already placed on the caller still holds. The parent creates and fills the cgroup and
moves the worker in right after starting it, before the worker is sent any work.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..policy.units import format_size
from .devices import IoThrottle
from .protections import Protection

__all__ = ["CgroupLimits", "WorkerCgroup", "create_cgroup"]

_V1_CONTROLLERS = ("memory", "cpu", "pids", "blkio")
_V2_CONTROLLERS = ("memory", "cpu", "pids", "io")
_STALE = re.compile(r"stockade-(\d+)-\d+$")
_PERIOD_US = 100_000
_numbers = itertools.count(1)  # next() on a count is atomic under the GIL


@dataclass(frozen=True)
class CgroupLimits:
    """Limits for a worker's cgroup. `cpu_quota` in cores (None: unbounded)."""

    memory: int
    cpu_quota: float | None
    pids: int
    io: tuple[IoThrottle, ...] = ()


@dataclass
class WorkerCgroup:
    """The cgroup of one worker: `dirs` maps each controller to its directory."""

    version: int
    dirs: dict[str, Path]
    report: list[Protection] = field(default_factory=list)

    def add(self, pid: int) -> list[Protection]:
        """Move process `pid` into every directory; returns protections that failed."""
        failed = []
        for controller, path in self.dirs.items():
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                failed.append(Protection(f"cgroup {controller}", False,
                                         f"cannot move the worker into {path}: {exc.strerror}"))
        return failed

    def set_memory(self, limit: int) -> bool:
        """Set the memory limit to `limit` bytes, the worker running or not; False when
        there is no memory controller, or the kernel refused (v1: the cgroup holds more
        than `limit`), or, under v2, the cgroup holds more than `limit` (the limit is
        then left as it was)."""
        path = self.dirs.get("memory")
        if path is None:
            return False
        try:
            if self.version == 2:
                # v2 takes a limit below the usage, then OOM-kills the worker to meet it:
                # an idle worker killed so that its next run would read as its guest's
                # memory violation. Refused here, as v1 refuses it (EBUSY).
                if int((path / "memory.current").read_text()) > limit:
                    return False
                (path / "memory.max").write_text(str(limit))
                return True
            # v1: memory+swap may never be below memory: raised first, lowered last.
            raising = limit > int((path / "memory.limit_in_bytes").read_text())
            if raising:
                with contextlib.suppress(OSError):
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
            (path / "memory.limit_in_bytes").write_text(str(limit))
            if not raising:
                with contextlib.suppress(OSError):
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return True
        except (OSError, ValueError):
            return False

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this cgroup."""
        path = self.dirs.get("memory")
        if path is None:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup."""
        for path in set(self.dirs.values()):
            if self.version == 2 and (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
                continue
            with contextlib.suppress(OSError, ValueError):
                for line in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(line), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the directories (after the worker has exited). Safe to call twice."""
        for path in set(self.dirs.values()):
            for _ in range(50):  # the kernel frees an exited task's cgroup asynchronously
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.dirs = {}


def _mounts() -> list[tuple[Path, str, set[str]]]:
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                found.append((Path(parts[1]), parts[2], set(parts[3].split(","))))
    return found


def _membership() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _sweep(parent: Path) -> None:
    """Remove worker cgroups left by Stockade processes that no longer exist."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _STALE.match(entry.name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                with contextlib.suppress(OSError):
                    entry.rmdir()


def _new_name() -> str:
    return f"stockade-{os.getpid()}-{next(_numbers)}"


def _new_dir(parent: Path, name: str) -> Path:
    _sweep(parent)
    path = parent / name
    path.mkdir()
    return path


def create_cgroup(limits: CgroupLimits) -> WorkerCgroup:
    """Create and fill a worker cgroup (v2 when delegated, else v1). The report in the
    returned object says which controllers are active and why the others are not."""
    mounts = _mounts()
    membership = _membership()
    v2_reason = "no cgroup2 mount"
    for mount, kind, _ in mounts:
        if kind == "cgroup2" and "" in membership:
            base = mount / membership[""].lstrip("/")
            missing = _v2_missing(base)
            if not missing:
                return _create_v2(base, limits)
            v2_reason = f"cgroup2 at {mount} lacks delegated {', '.join(missing)}"
    if any(kind == "cgroup" for _, kind, _ in mounts):
        return _create_v1(mounts, membership, limits, v2_reason)
    return WorkerCgroup(0, {}, [Protection("cgroup", False, f"no usable cgroups: {v2_reason}")])


def _v2_missing(base: Path) -> list[str]:
    try:
        available = set((base / "cgroup.controllers").read_text().split())
    except OSError:
        return list(_V2_CONTROLLERS)
    return [name for name in ("memory", "pids") if name not in available]


def _create_v2(base: Path, limits: CgroupLimits) -> WorkerCgroup:
    available = set((base / "cgroup.controllers").read_text().split())
    wanted = [name for name in _V2_CONTROLLERS if name in available]
    try:
        (base / "cgroup.subtree_control").write_text(" ".join(f"+{n}" for n in wanted))
        path = _new_dir(base, _new_name())
    except OSError as exc:
        reason = (f"cannot enable controllers below {base}: {exc.strerror} (a cgroup with "
                  "processes cannot delegate; run Stockade in a delegated cgroup)")
        return WorkerCgroup(2, {}, [Protection("cgroup", False, reason)])
    group = WorkerCgroup(2, {name: path for name in wanted})
    _write(group, "memory", path / "memory.max", str(limits.memory),
           f"v2 {format_size(limits.memory)}, no swap")
    with contextlib.suppress(OSError):
        (path / "memory.swap.max").write_text("0")
    cpu = "max" if limits.cpu_quota is None else str(int(limits.cpu_quota * _PERIOD_US))
    _write(group, "cpu", path / "cpu.max", f"{cpu} {_PERIOD_US}", _cpu_detail(2, limits))
    _write(group, "pids", path / "pids.max", str(limits.pids), f"v2 at most {limits.pids} tasks")
    _write_io(group, "io", path / "io.max", [t.v2_line() for t in limits.io], limits.io)
    return group


def _create_v1(mounts: list[tuple[Path, str, set[str]]], membership: dict[str, str],
               limits: CgroupLimits, v2_reason: str) -> WorkerCgroup:
    group = WorkerCgroup(1, {})
    name = _new_name()
    for controller in _V1_CONTROLLERS:
        mount = next((m for m, kind, opts in mounts if kind == "cgroup" and controller in opts),
                     None)
        if mount is None or controller not in membership:
            group.report.append(Protection(f"cgroup {controller}", False,
                                           f"no v1 {controller} hierarchy ({v2_reason})"))
            continue
        try:
            group.dirs[controller] = _new_dir(mount / membership[controller].lstrip("/"), name)
        except OSError as exc:
            group.report.append(Protection(f"cgroup {controller}", False,
                                           f"cannot create a v1 {controller} cgroup: {exc}"))
    if "memory" in group.dirs:
        path = group.dirs["memory"]
        _write(group, "memory", path / "memory.limit_in_bytes", str(limits.memory),
               f"v1 {format_size(limits.memory)}, no swap")
        with contextlib.suppress(OSError):
            (path / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
    if "cpu" in group.dirs:
        path = group.dirs["cpu"]
        quota = -1 if limits.cpu_quota is None else int(limits.cpu_quota * _PERIOD_US)
        with contextlib.suppress(OSError):
            (path / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
        _write(group, "cpu", path / "cpu.cfs_quota_us", str(quota), _cpu_detail(1, limits))
    if "pids" in group.dirs:
        _write(group, "pids", group.dirs["pids"] / "pids.max", str(limits.pids),
               f"v1 at most {limits.pids} tasks")
    if "blkio" in group.dirs:
        lines = [line for t in limits.io for line in t.v1_lines()]
        _write_io(group, "blkio", group.dirs["blkio"], lines, limits.io)
    return group


def _cpu_detail(version: int, limits: CgroupLimits) -> str:
    if limits.cpu_quota is None:
        return f"v{version} no quota (accounting only)"
    return f"v{version} quota {limits.cpu_quota:g} core(s)"


def _write(group: WorkerCgroup, controller: str, path: Path, value: str, detail: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        group.report.append(Protection(f"cgroup {controller}", False,
                                       f"cannot write {path.name}: {exc.strerror}"))
        return
    group.report.append(Protection(f"cgroup {controller}", True, detail))


def _write_io(group: WorkerCgroup, controller: str, target: Path, lines: list[tuple[str, str]]
              | list[str], throttles: tuple[IoThrottle, ...]) -> None:
    """Throttle lines are (file, value) pairs for v1 and `io.max` lines for v2."""
    name = f"cgroup {controller}"
    if not throttles:
        group.report.append(Protection(name, False, "no throttling configured or no block "
                                       "device behind the worker's files"))
        return
    try:
        for line in lines:
            if isinstance(line, tuple):
                (target / line[0]).write_text(line[1])
            else:
                target.write_text(line)
    except OSError as exc:
        group.report.append(Protection(name, False, f"the device refused throttling: {exc}"))
        return
    text = "; ".join(t.describe() for t in throttles)
    note = " (direct and synchronous I/O; v1 charges buffered writeback to the root)" \
        if controller == "blkio" else ""
    group.report.append(Protection(name, True, text + note))

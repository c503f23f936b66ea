"""`Impact`: what one attack cost its host, measured from outside the guest.

Per process (the one running the guest: this process, an isolation worker or the
plain-wasmtime child): wall and CPU time, resident memory growth, descriptors held.
System-wide: machine CPU from /proc/stat and the scratch disk's writes and flushes
from /proc/diskstats. In the scratch directory: entries and bytes created. Plus the
output the host had to take, and how long a crossed bound went on before the run was
stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .monitor import Observed
from .tree import TreeUsage

__all__ = ["Impact", "build_impact", "entries_outside", "guest_breaches", "BREACH_MARK"]

# Guests print this at the start of a line for each forbidden thing that worked.
BREACH_MARK = b"BREACH "


@dataclass(frozen=True)
class Impact:
    """Host impact of one run. Times in seconds unless named `_ms`, sizes in bytes.

    `machine_*` are whole-machine CPU seconds over all cores (from /proc/stat: they
    include whatever else the machine did meanwhile). `kernel_threads_s` is the CPU of
    the kernel's own threads (journal, writeback and block workers, softirq threads):
    work the guest can cause that nobody charges to it.
    """

    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    machine_user_s: float
    machine_system_s: float
    machine_iowait_s: float
    machine_irq_s: float
    kernel_threads_s: float
    device: str | None
    device_writes: int
    device_write_bytes: int
    device_flushes: int
    rss_growth_bytes: int
    rss_peak_bytes: int
    fds_held: int
    inodes_created: int
    bytes_created: int
    bytes_allocated: int
    symlinks_created: int
    tree_depth: int
    output_bytes: int
    breach: str | None
    breach_to_containment_ms: float | None
    deadline_overrun_ms: float | None
    outside_scratch: tuple[str, ...] = ()
    guest_breaches: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (tuples become lists, times rounded to microseconds)."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float):
                data[key] = round(value, 6)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data


def build_impact(observed: Observed, tree: TreeUsage, output_bytes: int, *,
                 cpu: tuple[float, float] | None = None, max_rss: int | None = None,
                 timeout: float | None = None, timed_out: bool = False,
                 outside: tuple[str, ...] = (), breaches: tuple[str, ...] = ()) -> Impact:
    """Combine the monitor's readings with the scratch tree and the output size.

    `cpu` (user, system) and `max_rss` replace sampled figures when the kernel gave
    exact ones (a reaped child's rusage). `timeout` with `timed_out` yields how far past
    its deadline the run was stopped.
    """
    user, system = cpu if cpu is not None else (observed.cpu_user_s, observed.cpu_sys_s)
    peak = max(observed.rss_peak, max_rss or 0)
    machine = observed.machine
    disk = observed.disk
    breach_ms = None
    if observed.breach_s is not None:
        breach_ms = max(observed.wall_s - observed.breach_s, 0.0) * 1000
    overrun = None
    if timed_out and timeout is not None:
        overrun = max(observed.wall_s - timeout, 0.0) * 1000
    return Impact(
        wall_s=observed.wall_s, cpu_user_s=user, cpu_sys_s=system,
        machine_user_s=machine.user + machine.nice, machine_system_s=machine.system,
        machine_iowait_s=machine.iowait, machine_irq_s=machine.irq + machine.softirq,
        kernel_threads_s=observed.kernel_threads_s,
        device=None if disk is None else observed.disk_name,
        device_writes=disk.writes if disk else 0,
        device_write_bytes=disk.bytes_written if disk else 0,
        device_flushes=disk.flushes if disk else 0,
        rss_growth_bytes=max(peak - observed.rss_before, 0), rss_peak_bytes=peak,
        fds_held=max(observed.fds_peak - observed.fds_before, 0),
        inodes_created=tree.inodes, bytes_created=tree.bytes, bytes_allocated=tree.allocated,
        symlinks_created=tree.symlinks, tree_depth=tree.depth, output_bytes=output_bytes,
        breach=observed.breach, breach_to_containment_ms=breach_ms, deadline_overrun_ms=overrun,
        outside_scratch=outside, guest_breaches=breaches,
    )


def entries_outside(run_root: Path, expected: set[str]) -> tuple[str, ...]:
    """Names in the run's own directory other than `expected` (the scratch directory and
    the runner's files): anything else there came through an escape."""
    try:
        return tuple(sorted(name for name in (p.name for p in run_root.iterdir())
                            if name not in expected))
    except OSError:
        return ()


def guest_breaches(stdout: bytes) -> tuple[str, ...]:
    """The guest's own reports of forbidden things that worked (lines marked BREACH)."""
    return tuple(line[len(BREACH_MARK):].decode(errors="replace").strip()
                 for line in stdout.splitlines() if line.startswith(BREACH_MARK))

"""Verdicts: was an attack `contained`, `degraded` or did it `escape`?

The bounds are stated, not tuned per attack. From the policy, with 10% slack: run
time (timeout, plus 1 s to load and compile), resident memory growth (linear memory
plus a fixed allowance for the runtime and captured output), descriptors, output,
bytes and entries in the scratch directory. System-wide, whatever the policy: at most
200 device flushes, device writes within the disk quota plus 64 MiB (journal, metadata
and the rest of the machine), and at most 1 s + 25% of the run's wall time of CPU in
the kernel's own threads (work charged to nobody).

- `contained`: every bound held and the guest reports nothing forbidden that worked.
- `degraded`: a limit stopped the guest, but only after a bound was crossed.
- `escaped`: a forbidden action worked (a file outside the scratch dir, a device
  opened), or a bound was crossed and nothing but the guest itself ended the run, or
  nothing ended it at all (the outer watchdog of a baseline run had to).
- `error`: the attack never ran: its guest cannot be loaded under any policy (not
  WebAssembly, truncated, invalid). It proves nothing, so it fails the suite as an
  escape does. A valid guest refused by the policy (a denied import, a compile budget)
  is judged on its numbers like any other run.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass

from ..policy import Policy
from ..policy.units import format_size
from .baseline import WATCHDOG_OUTCOME
from .impact import Impact
from .monitor import Watch

__all__ = ["Verdict", "Bounds", "bounds_for", "judge", "STOPPED_BY_LIMIT", "REFUSED", "MAX_FLUSHES",
           "KERNEL_BASE_S", "KERNEL_PER_WALL"]

MiB = 1024**2
SLACK = 1.10
LOAD_ALLOWANCE_S = 1.0
RUNTIME_MEMORY = 64 * MiB
RUNTIME_FDS = 8
MAX_FLUSHES = 200
DEVICE_ALLOWANCE = 64 * MiB
KERNEL_BASE_S = 1.0
KERNEL_PER_WALL = 0.25

# The runner's outcome for a module Stockade would not load (a ModuleError).
REFUSED = "refused"
# Outcomes that mean a limit or the policy ended the run (not the guest, not a watchdog).
STOPPED_BY_LIMIT = frozenset({
    "timeout", "fuel_exhausted", "memory_limit", "output_limit", "disk_quota", "file_quota",
    "fd_quota", "hostcall_limit", "denied", "trap", REFUSED,
})


class Verdict(enum.StrEnum):
    """How well an attack was contained; the value is the report's string."""

    CONTAINED = "contained"
    DEGRADED = "degraded"
    ESCAPED = "escaped"
    ERROR = "error"


@dataclass(frozen=True)
class Bounds:
    """What a contained run may cost. Sizes in bytes, times in seconds, None = unbounded."""

    wall_s: float | None
    rss_growth_bytes: int | None
    fds_held: int | None
    output_bytes: int | None
    bytes_created: int | None
    inodes_created: int | None
    device_flushes: int = MAX_FLUSHES
    device_write_bytes: int | None = DEVICE_ALLOWANCE

    def kernel_threads_s(self, wall: float) -> float:
        """Kernel-thread CPU seconds allowed for a run of `wall` seconds."""
        return KERNEL_BASE_S + KERNEL_PER_WALL * wall

    def watch(self) -> Watch:
        """The subset the monitor can check while the run goes on."""
        return Watch(rss_growth=self.rss_growth_bytes, fds=self.fds_held,
                     flushes=self.device_flushes, device_bytes=self.device_write_bytes,
                     wall=self.wall_s)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the bounds (plus the kernel-CPU rule as text)."""
        data: dict[str, object] = asdict(self)
        data["kernel_threads_s"] = f"{KERNEL_BASE_S:g} + {KERNEL_PER_WALL:g} * wall_s"
        return data


def _slack(value: float | None) -> float | None:
    return None if value is None else value * SLACK


def bounds_for(policy: Policy) -> Bounds:
    """The bounds a run under `policy` must stay within to count as contained."""
    limits = policy.limits
    wall = None if limits.timeout is None else limits.timeout * SLACK + LOAD_ALLOWANCE_S
    # captured stdout/stderr are held twice at the end (buffer and result)
    memory = int(limits.max_memory * SLACK) + RUNTIME_MEMORY + 2 * limits.max_output
    return Bounds(
        wall_s=wall,
        rss_growth_bytes=memory,
        fds_held=int(limits.max_open_files * SLACK) + RUNTIME_FDS,
        output_bytes=int(limits.max_output * SLACK),
        bytes_created=int(limits.disk_quota * SLACK) + 4096,
        inodes_created=int(limits.max_files * SLACK) + 1,
        device_write_bytes=int(limits.disk_quota * SLACK) + DEVICE_ALLOWANCE,
    )


def _exceeded(impact: Impact, bounds: Bounds) -> list[str]:
    checks: list[tuple[str, float, float | None, bool]] = [
        ("wall time", impact.wall_s, bounds.wall_s, False),
        ("memory growth", impact.rss_growth_bytes, bounds.rss_growth_bytes, True),
        ("descriptors", impact.fds_held, bounds.fds_held, False),
        ("output", impact.output_bytes, bounds.output_bytes, True),
        ("bytes in scratch", impact.bytes_created, bounds.bytes_created, True),
        ("entries in scratch", impact.inodes_created, bounds.inodes_created, False),
        ("device flushes", impact.device_flushes, bounds.device_flushes, False),
        ("device writes", impact.device_write_bytes, bounds.device_write_bytes, True),
        ("kernel-thread CPU", impact.kernel_threads_s, bounds.kernel_threads_s(impact.wall_s),
         False),
    ]
    reasons = []
    for label, value, bound, size in checks:
        if bound is not None and value > bound:
            shown = (f"{format_size(int(value))} > {format_size(int(bound))}" if size
                     else f"{value:.4g} > {bound:.4g}")
            reasons.append(f"{label} {shown}")
    return reasons


def judge(impact: Impact, bounds: Bounds, outcome: str,
          unloadable: str | None = None) -> tuple[Verdict, tuple[str, ...]]:
    """The verdict on one run and the reasons for it (empty when contained).
    `unloadable`: why the guest cannot be loaded under any policy (`modules.unloadable`),
    when the run failed to load it: an `error` verdict."""
    if unloadable is not None:
        return Verdict.ERROR, (f"never ran: its guest cannot be loaded under any policy: "
                               f"{unloadable}",)
    forbidden = []
    if impact.guest_breaches:
        counts = Counter(impact.guest_breaches)
        listed = "; ".join(line if n == 1 else f"{line} (x{n})" for line, n in counts.items())
        forbidden.append(f"guest reports {len(impact.guest_breaches)} forbidden actions "
                         f"that worked: {listed}")
    if impact.outside_scratch:
        forbidden.append("created outside the scratch dir: " + ", ".join(impact.outside_scratch))
    exceeded = _exceeded(impact, bounds)
    if outcome == WATCHDOG_OUTCOME:
        exceeded.insert(0, "nothing stopped it: still running when the outer watchdog killed it")
    if forbidden:
        return Verdict.ESCAPED, tuple(forbidden + exceeded)
    if not exceeded:
        return Verdict.CONTAINED, ()
    if outcome in STOPPED_BY_LIMIT:
        return Verdict.DEGRADED, tuple(exceeded)
    return Verdict.ESCAPED, tuple(exceeded)

"""Resource limits (setrlimit) of a worker process, and the per-run CPU-time step.

RLIMIT_CPU counts a process's whole life, so a reused worker gets a *hard* limit worth
`cpu_budget_runs` requests and a *soft* limit stepped twice per run, like the parent's
deadlines: the load allowance above what it has used when a request arrives, then one
run's worth when the guest starts (SIGXCPU ends the worker at the soft limit). Once
capabilities are dropped the hard limits cannot be raised again, not even by code that
escaped the guest.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from ..addrspace import vm_size
from ..policy.units import format_size
from .protections import Protection

__all__ = ["RlimitPlan", "apply_rlimits", "apply_address_space", "step_cpu_limit", "cpu_room",
           "cpu_used", "vm_size"]

INFINITY = resource.RLIM_INFINITY


@dataclass(frozen=True)
class RlimitPlan:
    """The limits a worker sets on itself. `run_cpu` is CPU seconds per run once the
    guest started (None: no CPU limit at all), `load_cpu` CPU seconds for loading and
    compiling before it (None: up to the worker's hard limit)."""

    nofile: int
    fsize: int
    nproc: int
    run_cpu: int | None
    load_cpu: int | None
    cpu_budget_runs: int

    def per_request_cpu(self) -> int:
        """CPU seconds one request may take at most (load and run)."""
        return (self.run_cpu or 0) + (self.load_cpu or 0)


def cpu_used() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def apply_rlimits(plan: RlimitPlan, is_root: bool) -> list[Protection]:
    """Set NOFILE, FSIZE, NPROC, CORE and the CPU hard limit; report each."""
    report = []
    try:
        _set(resource.RLIMIT_CORE, 0)
        report.append(Protection("rlimit core", True, "no core dumps"))
        _set(resource.RLIMIT_NOFILE, plan.nofile)
        report.append(Protection("rlimit nofile", True, f"{plan.nofile} descriptors"))
        _set(resource.RLIMIT_FSIZE, plan.fsize)
        report.append(Protection("rlimit fsize", True, f"files up to {format_size(plan.fsize)}"))
        _set(resource.RLIMIT_NPROC, plan.nproc)
        if is_root:
            report.append(Protection("rlimit nproc", False, f"set to {plan.nproc}, but the "
                                     "kernel exempts uid 0; the pids cgroup and seccomp "
                                     "(no fork) bound tasks instead"))
        else:
            report.append(Protection("rlimit nproc", True, f"{plan.nproc} processes of this user"))
    except (OSError, ValueError) as exc:
        report.append(Protection("rlimits", False, f"setrlimit failed: {exc}"))
    report.append(_apply_cpu_budget(plan))
    return report


def _apply_cpu_budget(plan: RlimitPlan) -> Protection:
    if plan.run_cpu is None:
        return Protection("rlimit cpu", False, "the policy has no timeout, so no CPU bound")
    lifetime = plan.per_request_cpu() * plan.cpu_budget_runs
    hard = int(cpu_used()) + 1 + lifetime
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    except (OSError, ValueError) as exc:
        return Protection("rlimit cpu", False, f"setrlimit failed: {exc}")
    load = "" if plan.load_cpu is None else f" after {plan.load_cpu} s to load"
    return Protection("rlimit cpu", True, f"{plan.run_cpu} CPU s per run{load}, "
                      f"{lifetime} s per worker")


def cpu_room(seconds: int) -> bool:
    """True when the hard CPU limit leaves `seconds` more CPU seconds."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    return hard == INFINITY or int(cpu_used()) + 1 + seconds <= hard


def step_cpu_limit(seconds: int | None) -> None:
    """Move the soft CPU limit `seconds` above the time used so far (None: up to the
    hard limit). SIGXCPU ends the worker when it is reached."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = hard if seconds is None else int(cpu_used()) + 1 + seconds
    if hard != INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def apply_address_space(limit: int, how: str) -> Protection:
    """Set RLIMIT_AS to `limit` bytes; `how` says how the figure was chosen."""
    try:
        _set(resource.RLIMIT_AS, limit)
    except (OSError, ValueError) as exc:
        return Protection("rlimit as", False, f"setrlimit failed: {exc}")
    return Protection("rlimit as", True, f"{format_size(limit)} address space ({how})")

"""Apply a `WorkerPlan` to the current process, in the one order that works.

1. network namespace (unshare acts on the calling thread: before any thread starts);
2. capabilities (per thread too; after the namespace, which needs CAP_SYS_ADMIN);
3. rlimits other than the address space;
4. the sandbox's engine is created and the address space wasmtime reserves for one
   linear memory is measured on it, which sizes RLIMIT_AS;
5. the seccomp filter, last, once nothing the set-up needs is refused any more.

Each step that cannot be applied is reported, never raised: a worker still runs with
what this machine allows, and the report says what that is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..policy.units import format_size
from .netns import enter_private_network
from .privileges import drop_capabilities
from .protections import Protection
from .rlimits import apply_address_space, apply_rlimits, vm_size
from .seccomp import DENIED_SYSCALLS, SeccompUnavailable, install_filter, libseccomp_version

if TYPE_CHECKING:
    import wasmtime

    from .plan import WorkerPlan

__all__ = ["harden_before_engine", "harden_after_engine", "memory_reservation"]


def harden_before_engine(plan: WorkerPlan) -> list[Protection]:
    """Steps 1-3: namespace, capabilities, rlimits. Call before any thread exists."""
    report = []
    if plan.network_namespace:
        report.append(enter_private_network())
    else:
        report.append(Protection("network namespace", False, "turned off by configuration"))
    if plan.drop_capabilities:
        report.append(drop_capabilities())
    else:
        report.append(Protection("capabilities", False, "turned off by configuration"))
    report += apply_rlimits(plan.rlimits, is_root=os.geteuid() == 0)
    return report


def memory_reservation(engine: wasmtime.Engine) -> int:
    """Bytes of address space wasmtime reserves for one linear memory on `engine`
    (its static reservation plus guard regions), measured by instantiating one."""
    import wasmtime

    module = wasmtime.Module(engine, "(module (memory 1))")
    store = wasmtime.Store(engine)
    before = vm_size()
    wasmtime.Instance(store, module, [])
    reserved = vm_size() - before
    del store
    return max(reserved, 0)


def harden_after_engine(plan: WorkerPlan, engine: wasmtime.Engine) -> list[Protection]:
    """Steps 4-5: RLIMIT_AS sized for `engine`, then the seccomp filter."""
    report = []
    limits = plan.policy.limits
    if plan.address_space is not None:
        report.append(apply_address_space(plan.address_space, "configured"))
    else:
        per_memory = memory_reservation(engine)
        memories = limits.max_memories
        total = (vm_size() + memories * (per_memory + limits.max_memory)
                 + 2 * limits.max_output + plan.address_space_headroom)
        how = (f"{format_size(per_memory)} reserved per linear memory x {memories}, "
               f"+ {format_size(plan.address_space_headroom)} headroom")
        report.append(apply_address_space(total, how))
    if plan.seccomp:
        report.append(_seccomp())
    else:
        report.append(Protection("seccomp", False, "turned off by configuration"))
    return report


def _seccomp() -> Protection:
    try:
        version = libseccomp_version()
        rules = install_filter(DENIED_SYSCALLS)
    except SeccompUnavailable as exc:
        return Protection("seccomp", False, str(exc))
    return Protection("seccomp", True, f"libseccomp {version}: {rules} rules (EPERM): sockets, "
                      "ptrace, mount, kexec, bpf, keyrings, modules, namespaces, exec, fork, "
                      "signals to others, io_uring, ...")

"""Apply a `WorkerPlan` to the current process, in the one order that works.

1. network namespace (unshare acts on the calling thread: before any thread starts);
2. mount namespace, with the granted directories idmapped to the worker's uid (needs
   root, and a fork for the mapping: before any thread);
3. identity: the worker's own uid, no groups, no capabilities, `no_new_privs`;
4. rlimits other than the address space;
5. Landlock (per thread, no TSYNC before ABI 8: before the engine starts its threads);
6. the sandbox's engine is created and the address space wasmtime reserves for one
   linear memory is measured on it (a C-API pooling engine has reserved its memories
   already), which sizes RLIMIT_AS;
7. the allow-list seccomp filter, last, once nothing the set-up needs is refused.

Steps 1-5 are `confine.confine_current_process`, the part any process can use. Each
step that cannot be applied is reported, never raised: a worker still runs with what
this machine allows, and the report says what that is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..engine.compiler import compile_in_this_process
from ..engine.trip import with_page
from ..policy.units import format_size
from .backend import preload
from .confine import Confinement, Grants, apply_seccomp, confine_current_process
from .protections import Protection
from .rlimits import apply_address_space, apply_rlimits, vm_size

if TYPE_CHECKING:
    import wasmtime

    from ..policy import Limits
    from .plan import WorkerPlan

__all__ = ["harden_before_engine", "harden_after_engine", "memory_reservation", "run_reservation",
           "grants_of"]


def grants_of(plan: WorkerPlan) -> Grants:
    """What a worker under `plan` may reach."""
    return Grants(
        read=plan.readable,
        dirs=plan.all_grants,
        uid_base=plan.uid_base,
        mount_root=plan.temp_dir,
        drop_privileges=plan.drop_capabilities,
        network_namespace=plan.network_namespace,
        mount_namespace=plan.mount_namespace,
        landlock=plan.landlock,
        seccomp=False,  # after the engine exists (step 7)
    )


def harden_before_engine(plan: WorkerPlan) -> Confinement:
    """Steps 1-5. Call before any thread exists."""
    # This process is the compile's bound (its own RLIMIT_CPU and RLIMIT_AS), and
    # seccomp will forbid it a compiler child.
    compile_in_this_process()
    # The plan's backend (wasmtime-py or the C API, and the system libraries their
    # shared library maps, libgcc_s) loads while the installation and the system's
    # library directories are still reachable: nothing imports them eagerly.
    preload(plan.backend)
    grants = grants_of(plan)
    return confine_current_process(grants, before_landlock=lambda: apply_rlimits(
        plan.rlimits, is_root=os.geteuid() == 0))


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


def run_reservation(limits: Limits, per_memory: int, tripwire: bool = False) -> int:
    """Address space one run of a guest under `limits` maps: a reservation of
    `per_memory` bytes (`memory_reservation`) plus its size for each linear memory, for
    the GC heap a `wasm_gc` policy allows (wasmtime reserves it as one more memory), and
    for a tripwire's page, which only the gateway's pool counts (an isolated worker keeps
    its deadline by process)."""
    memories = with_page(limits.max_memories + limits.wasm_gc, tripwire)
    return memories * (per_memory + limits.max_memory)


def harden_after_engine(plan: WorkerPlan, engine: wasmtime.Engine | None) -> list[Protection]:
    """Steps 6-7: RLIMIT_AS sized for `engine`, then the seccomp filter. `engine` None
    stands for a pooling engine made already (the C API's): its linear memories are
    reserved, so what is mapped now counts them."""
    report = []
    limits = plan.policy.limits
    if plan.address_space is not None:
        report.append(apply_address_space(plan.address_space, "configured"))
    elif engine is None:
        total = vm_size() + 2 * limits.max_output + plan.address_space_headroom
        how = (f"the C-API pool's memory reserved, + "
               f"{format_size(plan.address_space_headroom)} headroom")
        report.append(apply_address_space(total, how))
    else:
        per_memory = memory_reservation(engine)
        memories = limits.max_memories + limits.wasm_gc
        total = (vm_size() + run_reservation(limits, per_memory)
                 + 2 * limits.max_output + plan.address_space_headroom)
        how = (f"{format_size(per_memory)} reserved per linear memory x {memories}, "
               f"+ {format_size(plan.address_space_headroom)} headroom")
        report.append(apply_address_space(total, how))
    report.append(apply_seccomp() if plan.seccomp
                  else Protection("seccomp", False, "turned off by configuration"))
    return report

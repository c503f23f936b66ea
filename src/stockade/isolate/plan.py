"""`WorkerPlan`: what a worker applies to itself, and the cgroup limits its parent sets.

Both are derived from the policy (what the guest may use) and the `IsolationConfig`
(what the worker around it may use), once per worker.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..engine.cache import cache_max_bytes
from ..paths import PACKAGE_ROOT, cache_dir
from ..policy import Policy, Trust
from ..sandbox.backend import Backend, worker_backend
from .cgroup import CgroupLimits
from .config import IsolationConfig
from .devices import throttles_for
from .rlimits import RlimitPlan

__all__ = ["WorkerPlan", "ISOLATED_SCOPE", "plan_for", "cgroup_limits_for", "interpreter_paths"]



# The AoT scope of isolated workers outside the gateway (see `WorkerPlan.cache_scope`):
# their parent reseals this host's entries into it (`IsolatedSandbox`), so a scoped worker
# does not compile what this host already has.
ISOLATED_SCOPE = "isolated"


@dataclass(frozen=True)
class WorkerPlan:
    """Sent to a new worker: its policy, the protections to apply in `harden` order,
    and the backend it runs (`backend`).

    `address_space` is an explicit RLIMIT_AS in bytes; None lets the worker size it from
    the address space wasmtime reserves per linear memory, measured on its own engine,
    plus `address_space_headroom`.
    """

    policy: Policy
    rlimits: RlimitPlan
    address_space: int | None
    address_space_headroom: int
    seccomp: bool
    network_namespace: bool
    drop_capabilities: bool
    mount_namespace: bool = True
    landlock: bool = True
    uid_base: int | None = None
    grants: tuple[tuple[Path, bool], ...] = ()
    readable: tuple[Path, ...] = ()
    cache: Path | None = None
    temp_dir: Path | None = None
    probe: str | None = None
    # The sandbox the worker wraps (`isolate.backend`): "wasmtime" imports wasmtime-py
    # and the fast path (a pool worker's executors use both), "capi" the C API only.
    backend: Backend = "wasmtime"
    # The worker's C-API engine has no epochs; it ends itself at a run's deadline
    # (`isolate.overrun`). Only for the C API and a policy without a fuel budget.
    process_deadline: bool = False
    # The AoT key of the worker's `cache_scope` (`seal.scoped_key`), derived by the
    # parent from this host's (which such a worker never holds nor reaches), or this
    # host's own without a scope; installed by the worker before it loads a module.
    # `cache` is then that scope's directory.
    aot_key: bytes | None = dataclasses.field(default=None, repr=False)
    # Workers that may trust each other's compiled code: `cordon:NAME` (a gateway
    # cordon's pool), `ISOLATED_SCOPE` (`plan_for`: `stockade run --isolate process`,
    # `IsolatedSandbox`, process pools); "" for this host's own key and cache (tests).
    cache_scope: str = ""
    # sha256 digests of `.cwasm` files the parent verified under this host's key (the
    # worker, holding only its scope's key, could not): `seal.vouch_for`.
    vouched: frozenset[str] = frozenset()
    # The most the entries of the worker's AoT cache may total: `STOCKADE_CACHE_MAX_BYTES`,
    # read and checked once, as the plan is made (UsageError), and handed to each of its
    # workers (`handle.worker_environment`) and to its sandbox's own cache: one cap for
    # all, whatever the variable holds by the time a worker starts.
    cache_max_bytes: int = dataclasses.field(default_factory=cache_max_bytes)

    @property
    def all_grants(self) -> tuple[tuple[Path, bool], ...]:
        """Every directory the worker may use, (path, writable): the policy's, its
        temporary directory and the AoT cache."""
        extra = [(path, True) for path in (self.temp_dir, self.cache) if path is not None]
        return (*self.grants, *extra)


def vouched_files(files: Iterable[tuple[Path, int]]) -> frozenset[str]:
    """The digests of those files `(path, size limit)` that are `.cwasm` files this host
    sealed (read here, up to the limit; unreadable, oversized or unsealed ones are left
    to the worker, which refuses them with the reason)."""
    from ..engine.seal import SealError, host_key, vouch_for

    found = set()
    for path, limit in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read(4)
                if data != b"\x7fELF":  # not native code: nothing to vouch for
                    continue
                data += handle.read(limit - 3)
            digest = None if len(data) > limit else vouch_for(data, host_key())
        except (OSError, SealError):
            continue
        if digest is not None:
            found.add(digest)
    return frozenset(found)


def inherited(plan: WorkerPlan) -> tuple[WorkerPlan, tuple[int, ...]]:
    """The plan as its worker must see it, and the descriptors the worker inherits: a
    directory granted from a descriptor this process holds (`DirGrant.held`) becomes
    `/proc/self/fd/N` there, N inherited at the same number, so the worker opens the very
    directory that was judged (its uid and Landlock keep it out of our /proc)."""
    fds, dirs = [], []
    for grant in plan.policy.capabilities.dirs:
        fd = grant.held_fd()
        if fd is not None:
            fds.append(fd)
            grant = replace(grant, host=Path(f"/proc/self/fd/{fd}"))
        dirs.append(grant)
    if not fds:
        return plan, ()
    policy = plan.policy.with_capabilities(dirs=tuple(dirs))
    grants = tuple((grant.real_host(), grant.writable) for grant in dirs)
    return replace(plan, policy=policy, grants=grants), tuple(fds)


def plan_for(policy: Policy, config: IsolationConfig) -> WorkerPlan:
    """The plan of a worker running `policy` under `config`."""
    backend = worker_backend(policy)
    rlimits = RlimitPlan(
        nofile=config.nofile(policy),
        fsize=config.fsize(policy),
        nproc=config.pids_max,
        run_cpu=config.run_cpu_seconds(policy),
        load_cpu=config.load_cpu_seconds(policy),
        cpu_budget_runs=config.cpu_budget_runs,
    )
    return WorkerPlan(
        # Signatures are verified by the parent, which sends the verified bytes: the
        # worker neither needs nor can reach the trusted keys.
        policy=replace(policy, trust=Trust()),
        rlimits=rlimits,
        address_space=config.address_space,
        address_space_headroom=config.address_space_headroom,
        seccomp=config.seccomp,
        network_namespace=config.network_namespace,
        drop_capabilities=config.drop_capabilities,
        mount_namespace=config.mount_namespace,
        landlock=config.landlock,
        uid_base=config.uid_base if config.drop_capabilities else None,
        grants=tuple((grant.real_host(), grant.writable) for grant in policy.capabilities.dirs),
        readable=interpreter_paths(),
        cache=Path(os.path.realpath(cache_dir())),
        cache_scope=ISOLATED_SCOPE,
        backend=backend,
        process_deadline=config.process_deadline and backend == "capi"
        and policy.limits.fuel is None,
    )


def interpreter_paths() -> tuple[Path, ...]:
    """What the worker's interpreter reads after Landlock: its standard library,
    extension modules and installed packages (`sys.path`, this package's root), all
    code, no data. Existing directories only. Not this process's first entry unless it
    runs with `-P` (`sys.flags.safe_path`): that is its script's directory or its
    working directory, never a worker's (`module_command` starts it with `-P`); from
    `/`, `python -m stockade run` granted the worker the whole filesystem (found by
    review)."""
    entries = sys.path if sys.flags.safe_path else sys.path[1:]
    # Nor what the empty and relative entries of PYTHONPATH made of the working directory
    # and its parents (`$PYTHONPATH:/app` with it unset, `..`: found by the fixes'
    # reviews): `import_path` passes none of them to a worker.
    try:
        relative = {os.path.realpath(entry)
                    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                    if not os.path.isabs(entry)}
    except OSError:  # the working directory was removed: nothing resolves to it
        relative = set()
    roots = {Path(real) for entry in entries if entry
             if (real := os.path.realpath(entry)) not in relative} | {Path(PACKAGE_ROOT)}
    kept = [root for root in roots if root.is_dir()]
    return tuple(sorted(root for root in kept
                        if not any(root != other and root.is_relative_to(other)
                                   for other in kept)))


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def cgroup_limits_for(policy: Policy, config: IsolationConfig) -> CgroupLimits:
    """The cgroup limits of a worker: memory, CPU, tasks, and throttling of the disks
    it writes (the AoT cache, the temporary directory, writable grants)."""
    written = [cache_dir(), Path(tempfile.gettempdir())]
    written += [grant.host for grant in policy.capabilities.dirs if grant.writable]
    io = throttles_for([_existing(path) for path in written], config.io_write_bps,
                       config.io_write_iops, config.io_read_bps, config.io_read_iops)
    return CgroupLimits(memory=config.cgroup_memory(policy), cpu_quota=config.cpu_quota,
                        pids=config.pids_max, io=io)

"""A confined pool worker: `python -P -m stockade.gateway.poolworker READ_FD WRITE_FD
PARENT_PID TIE`, started through `stockade.isolate.handle.WorkerProcess`.

Started by a gateway worker for one cordon's pool (`pool.py`). It reads its `WorkerPlan`
(`worker_plan`) and then a `PoolPlan`, hardens itself before any thread exists
(capabilities, rlimits, Landlock),
prepares every function of the plan with the gateway's own executors (the C-API fast
path, metered where a function needs it; the sandbox when the server says so), then caps
its address space
and installs the seccomp filter, and answers `ready` with the functions it holds and
its protections. Then, one at a time until its parent closes the pipe:

- `("run", name, stdin_size, env)`, then, when `stdin_size` is not zero, the request's
  body as one raw frame (`read_raw_frame`: read into one bytes object, never a pickle)
  -> `("result", wire result)` (its stdout and stderr following as raw frames:
  `write_reply`), `("error", wire error)` for a Stockade error,
  `("memory", {"limit"})` when the run hit the address-space limit (the worker then
  exits), `("failed", {"message"})` for anything else.

Replies are plain data (see `stockade.isolate.protocol`): the parent trusts nothing a
worker whose guest got loose could forge beyond a checked `Result`.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ModuleError, ModuleNotFound, StockadeError
from ..invocation import MAX_STDIN, Invocation
from ..isolate.harden import (
    harden_after_engine,
    harden_before_engine,
    memory_reservation,
    run_reservation,
)
from ..isolate.plan import WorkerPlan, interpreter_paths, vouched_files
from ..isolate.protections import Protection
from ..isolate.protocol import (
    bounded_message,
    error_to_wire,
    read_frame,
    read_raw_frame,
    write_frame,
    write_reply,
)
from ..isolate.rlimits import RlimitPlan, vm_size
from ..isolate.worker import worker_main
from ..paths import cache_dir
from ..result import Outcome
from .manifest import FunctionSpec

__all__ = ["PoolPlan", "main", "serve", "WORKER_VARIABLE"]

# Set in a pool worker's environment as "cordon=NAME pid=PID": a function that lists it
# in `env_allow` learns where it runs (nothing else sees it).
WORKER_VARIABLE = "STOCKADE_WORKER"
# Host allocations a worker may make beyond its prepared functions and one run's
# linear memories: generous for CGI buffers, far below what would hurt the host.
HEAP_HEADROOM = 256 * 1024**2
_RECLAIM_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class PoolPlan:
    """What a pool worker serves, sent after its `WorkerPlan`: the cordon's functions
    and the executor mode (`[server] executor`)."""

    cordon: str
    specs: tuple[FunctionSpec, ...]
    executor: str
    heap_headroom: int = HEAP_HEADROOM
    log_level: str = "WARNING"
    # (name, sha256) of each module as the routes' first processes loaded it: a
    # replacement serves those bytes or not the function (a file changed without a
    # reload ran the new one, found by review). Empty for the first processes.
    digests: tuple[tuple[str, str], ...] = ()


def _address_space(plan: PoolPlan, sandboxed: list[FunctionSpec], engine: Any) -> int:
    """RLIMIT_AS: what is mapped now (engines, pools, compiled code), plus one run of
    the largest sandboxed function (a fresh reservation per linear memory, and one for a
    tripwire's page), plus the output buffers and the heap headroom."""
    from ..engine import EngineConfig

    total = vm_size() + plan.heap_headroom
    if sandboxed:
        per_memory = memory_reservation(engine)
        total += max(run_reservation(s.policy.limits, per_memory,
                                     EngineConfig.for_limits(s.policy.limits).tripwire)
                     for s in sandboxed)
    return total + 2 * max(s.policy.limits.max_output for s in plan.specs)


def serve(read_fd: int, write_fd: int) -> None:
    """Harden by the plans read from `read_fd`, prepare the functions, answer runs."""
    confinement: WorkerPlan = pickle.loads(read_frame(read_fd))
    plan: PoolPlan = pickle.loads(read_frame(read_fd))
    logging.basicConfig(level=plan.log_level, stream=sys.stderr,
                        format=f"stockade serve [cordon {plan.cordon} pool {os.getpid()}]: "
                               "%(message)s")
    os.environ[WORKER_VARIABLE] = f"cordon={plan.cordon} pid={os.getpid()}"
    report = [_explained(p) for p in harden_before_engine(confinement).report]
    from ..engine import EngineConfig, get_engine
    from ..engine.seal import install_key, vouch
    from .executor import Executors, named_error

    if confinement.aot_key is not None:  # read by the parent, as for `isolate`'s workers
        install_key(confinement.aot_key)
    vouch(confinement.vouched)  # .cwasm files the parent checked under this host's key

    executors = Executors(plan.executor, 1)
    prepared = {}
    refused: dict[str, str] = {}  # name -> why a replacement does not serve it
    digests = dict(plan.digests)
    for spec in plan.specs:
        try:
            function = executors.prepare(spec)
            expected = digests.get(spec.name)
            if expected is not None and function.sha256 != expected:
                raise ModuleError(f"{spec.module.name} changed since the routes were built "
                                  f"(sha256 {function.sha256[:16]}, not {expected[:16]}); "
                                  "a reload serves the new file")
        except (ModuleNotFound, ModuleError) as exc:  # told as the in-process gateway tells it
            error = named_error(exc, spec.name)
            if not digests:  # the routes' first processes: the manifest is refused
                write_frame(write_fd, ("error", error_to_wire(error)))
                return
            # A replacement: the cordon's other functions are still served.
            refused[spec.name] = error.message
            continue
        prepared[spec.name] = function
    sandboxed = [p.spec for p in prepared.values() if p.kind == "sandbox"]
    engine = get_engine(EngineConfig.for_limits(plan.specs[0].policy.limits)).wasmtime
    limit = _address_space(plan, sandboxed, engine)
    report += harden_after_engine(replace(confinement, address_space=limit), engine)
    baseline = vm_size()
    write_frame(write_fd, ("ready", {
        "pid": os.getpid(),
        "functions": {name: [p.sha256, p.kind] for name, p in prepared.items()},
        "refused": refused,
        "protections": [tuple(p) for p in report]}))
    while True:
        try:
            request = pickle.loads(read_frame(read_fd))
            # The body announced is read even for a request refused below: left in the
            # pipe, it would be read as the next request.
            stdin = read_raw_frame(read_fd, MAX_STDIN) \
                if request[0] == "run" and request[2] else b""
        except EOFError:
            return
        if request[0] != "run" or request[1] not in prepared:
            write_frame(write_fd, ("failed", {"message": f"unknown request {request[:2]!r}"}))
            continue
        _, name, _, env = request
        function = prepared[name]
        # The command line is the function's (manifest `argv`), never the request's.
        invocation = Invocation(stdin=stdin, env=tuple(env), name=name,
                                tenant=function.spec.tenant, args=function.spec.args)
        reply: tuple[str, Any]
        try:
            result = function.run(invocation)
            # The engine reports an exception in a host call as outcome `error` named by
            # its type; MemoryError there means the address-space limit held.
            if result.outcome is Outcome.ERROR and result.message.startswith("MemoryError"):
                raise MemoryError
            reply = ("result", result)
        except StockadeError as exc:
            reply = ("error", error_to_wire(exc))
        except MemoryError:
            # Host memory the guest made this worker take (a host call copying what the
            # guest asked for), past the address-space limit. Report, then make way for a
            # fresh worker: the heap may be left fragmented or half-built.
            write_frame(write_fd, ("memory", {"limit": limit}))
            os._exit(3)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, the worker goes on
            reply = ("failed", {"message": bounded_message(f"{type(exc).__name__}: {exc}")})
        # A trap's traceback keeps its Store (a whole linear-memory reservation) alive
        # until the cycle collector runs; the address-space limit has room for one.
        if vm_size() > baseline + _RECLAIM_BYTES:
            gc.collect()
        write_reply(write_fd, *reply)


def _explained(protection: Protection) -> Protection:
    """The report of a step, restated where a pool worker differs from `isolate`'s."""
    if protection.name == "rlimit cpu" and not protection.active:
        return Protection("rlimit cpu", False, "a pool worker serves many runs: each run's "
                          "deadline is held by its engine and by the gateway, which kills "
                          "the worker at the timeout + grace")
    return protection


def worker_plan(specs: tuple[FunctionSpec, ...], nofile_overhead: int = 64,
                fsize_headroom: int = 256 * 1024**2, pids: int = 64) -> WorkerPlan:
    """The `WorkerPlan` of a pool serving `specs`: descriptors and file sizes for the
    largest of them, no CPU rlimit (each run's deadline is enforced by its engine and
    by the parent, and a pool worker lives for many runs); every protection on."""
    limits = [spec.policy.limits for spec in specs]
    rlimits = RlimitPlan(
        nofile=max(lim.max_open_files for lim in limits) + nofile_overhead,
        fsize=max(max(lim.disk_quota, lim.max_output) for lim in limits) + fsize_headroom,
        nproc=pids, run_cpu=None, load_cpu=None, cpu_budget_runs=1)
    # Started by a gateway worker that holds no capabilities: no namespaces can be made,
    # so no uid switch either (its idmapped grants need a mount namespace). Landlock
    # holds it to the modules, the grants, the cache and the keys it verifies them with.
    grants = {(Path(os.path.realpath(g.host)), g.writable)
              for spec in specs for g in spec.policy.capabilities.dirs}
    modules = {Path(os.path.realpath(spec.module)) for spec in specs}
    # A [trust] policy is enforced here too, on the bytes this process compiles: it reads
    # the trusted keys (files or directories).
    modules |= {Path(os.path.realpath(key)) for spec in specs for key in spec.policy.trust.keys}
    return WorkerPlan(policy=specs[0].policy, rlimits=rlimits, address_space=None,
                      address_space_headroom=0, seccomp=True, network_namespace=False,
                      drop_capabilities=True, mount_namespace=False, landlock=True,
                      uid_base=None, grants=tuple(sorted(grants)),
                      # Not the config directory: this host's AoT and audit keys.
                      readable=(*interpreter_paths(), *sorted(modules)),
                      cache=Path(os.path.realpath(cache_dir())),
                      cache_scope=f"cordon:{specs[0].cordon}",
                      vouched=vouched_files((spec.module, spec.policy.limits.max_module_size)
                                            for spec in specs
                                            if spec.policy.capabilities.allow_precompiled))


def main(argv: list[str] | None = None) -> int:
    """Entry point of a pool worker process."""
    return worker_main(serve, sys.argv[1:] if argv is None else argv,
                       "stockade.gateway.poolworker")


if __name__ == "__main__":
    sys.exit(main())

"""`WorkerPool`: a cordon's warm, confined worker processes, and `PooledFunction`.

    gateway worker (HTTP, quotas, breakers)
    └── WorkerPool per cordon: `size` processes (`poolworker.py`), each hardened and
        holding every module of the cordon prepared (fast path inside), one run at a time

Each process is an `isolate` worker (`stockade.isolate.handle.WorkerProcess`: its
spawn, pipes, cgroup, temporary directory, reaping and death causes) running the pool
worker program. A run takes an idle process, sends it the request and waits for the
result with the function's timeout plus `GRACE`; no process is started per request. A
process that dies (crash, OOM kill, address-space limit), outlives its deadline, or
ends a run above the pool's memory limit is killed and replaced in the background; the
run that caused it gets `memory_limit`, `timeout` or `error`. Each process has its own
cgroup (memory, one core, tasks) when this machine has one. A reload keeps a pool whose
cordon's functions and modules did not change (`serves`) and retires the others.

A pool serving several tenants' functions keeps one of its processes from any single
tenant (`tenant_share`, all but one), and a tenant waiting for its first process comes
before one waiting for another (`_may_take`). A tenant whose runs sleep just under their
timeout, within its own concurrency quota, held every process, and every other
tenant's run waited out its timeout for a 503 (found by review); keeping processes idle
for every tenant holding none, whether it asked or not, served a busy tenant one at a
time beside idle processes (the next review). Runs are not preempted: tenants that
together hold the pool (two with two processes; one with one) make the others wait for
a run to end, and start-up warns of such a cordon; tenants that must not share at all
belong in cordons of their own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..errors import StockadeError, WorkerError
from ..invocation import Invocation
from ..isolate.cgroup import CgroupLimits
from ..isolate.handle import WorkerProcess, WorkerStopped
from ..isolate.protections import Protection
from ..isolate.protocol import error_from_wire, result_from_wire, text_of
from ..observe import RunObserver, notify_finished, notify_started
from ..policy.units import format_size
from ..result import Outcome, Result, Usage
from .manifest import FunctionSpec
from .poolworker import PoolPlan, worker_plan
from .prepared import Prepared
from .problem import Unavailable

__all__ = ["WorkerPool", "PooledFunction", "start_pools", "GRACE", "MEMORY_OVERHEAD"]

logger = logging.getLogger("stockade.gateway")
GRACE = 1.0  # seconds past a function's timeout before its process is killed
START_TIMEOUT = 60.0  # seconds a pool process may take to harden and load its modules
MEMORY_OVERHEAD = 256 * 1024**2  # interpreter, engines and buffers, on top of guests
_REPLY_OVERHEAD = 1024**2
PROGRAM = "stockade.gateway.poolworker"
# Host variables the pool worker's own code reads (beyond `worker_environment`'s).
_SETTINGS = ("STOCKADE_FASTPATH_NATIVE",)


class WorkerPool:
    """`size` warm processes serving the functions of one cordon (see the module
    docstring). `start` blocks until all are ready; `run` is called on guest threads."""

    def __init__(self, cordon: str, specs: Sequence[FunctionSpec], size: int,
                 executor: str, cgroups: bool = True) -> None:
        self.cordon = cordon
        self.specs = tuple(specs)
        self.size = size
        guest = max(s.policy.limits.max_memory * s.policy.limits.max_memories
                    for s in self.specs)
        self.memory_limit = guest + MEMORY_OVERHEAD
        self._worker_plan = worker_plan(self.specs)
        self._plan = PoolPlan(cordon, self.specs, executor,
                              log_level=logging.getLevelName(logger.getEffectiveLevel()))
        # The variables the functions' policies pass through, read now: a worker's
        # environment is otherwise an allow-list (`worker_environment`).
        passed = {*_SETTINGS, *(name for spec in self.specs
                                for name in spec.policy.capabilities.env_allow)}
        self._env = {name: os.environ[name] for name in passed if name in os.environ}
        self._cgroup = (CgroupLimits(memory=self.memory_limit, cpu_quota=1.0, pids=64)
                        if cgroups else None)
        self._reply_limit = 2 * max(s.policy.limits.max_output for s in self.specs) \
            + _REPLY_OVERHEAD
        tenants = {spec.tenant for spec in self.specs}
        self.tenant_share = size if len(tenants) < 2 else max(1, size - 1)
        if len(tenants) > 1 and (size < 2 or len(tenants) > size):
            logger.warning("cordon %s: %d tenants share %d pool workers: while some hold "
                           "them all, the others' runs wait; give tenants their own cordon "
                           "or raise pool_workers", cordon, len(tenants), size)
        self._held: dict[str | None, int] = {}  # tenant -> processes its runs hold
        self._waiting: dict[str | None, int] = {}  # tenant -> its runs waiting for one
        self._idle: list[WorkerProcess] = []
        self._all: set[WorkerProcess] = set()
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        # Replaced by a reload: a process ends with its run, not kept idle (old pools
        # kept for 2x their longest timeout piled up under frequent reloads: review).
        self._retired = False
        self.functions: dict[str, tuple[str, str]] = {}  # name -> (sha256, kind)
        # name -> why it is not served: its module changed on disk (or went) before a
        # replacement process loaded it; 503 until a reload builds the routes again.
        self.refused: dict[str, str] = {}
        self.protections: list[Protection] = []

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    @property
    def drained(self) -> bool:
        """True once closed or retired with no process left or starting."""
        with self._cond:
            return (self._closed or self._retired) and not self._all and not self._starting

    def serves(self, specs: Sequence[FunctionSpec], executor: str, size: int) -> bool:
        """Whether this pool is the one `start_pools` would start for `specs`: the same
        functions, executor and size, none refused since, and each module file still
        holding the bytes its processes loaded (its sha256, from the AoT cache's stat
        index when the file is unchanged). A reload keeps such a pool running."""
        if self._closed or self._retired or self.refused or tuple(specs) != self.specs \
                or executor != self._plan.executor or size != self.size:
            return False
        from ..engine.cache import AotCache
        from ..engine.loader import digest
        from ..paths import cache_dir

        cache = AotCache(cache_dir())
        for spec in self.specs:
            try:
                sha256 = digest(spec.module, cache, spec.policy.limits.max_module_size)
            except StockadeError:
                return False
            if sha256 != self.functions.get(spec.name, ("", ""))[0]:
                return False
        return True

    def retire(self) -> None:
        """The routes were replaced: close idle processes now and busy ones when their
        run ends. A run routed before the swap that asks later still gets one, started
        for it (and closed after)."""
        with self._cond:
            self._retired = True
            idle, self._idle = self._idle, []
            for worker in idle:
                self._all.discard(worker)
        for worker in idle:
            worker.close()

    def _spawn(self) -> WorkerProcess:
        """A new pool process, sent its plans (not yet ready). Raises WorkerError."""
        worker = WorkerProcess(self._worker_plan, self._cgroup, sys.executable,
                               program=PROGRAM, env=self._env, log=True)
        try:
            worker.send(self._plan)
        except EOFError:
            worker.close()
            raise WorkerError("a pool worker ended before it read its plan") from None
        return worker

    def _ready(self, worker: WorkerProcess) -> None:
        """Wait for `worker`'s `ready`. Raises WorkerError with the cause, or the
        ModuleError or ModuleNotFound of a function it cannot serve (the worker is then
        closed)."""
        try:
            worker.wait_ready(START_TIMEOUT)
        except WorkerError as exc:
            worker.close()
            raise WorkerError(f"a pool worker did not start: {exc.message}") from None
        except StockadeError:  # a function it cannot serve (named by the worker)
            worker.close()
            raise

    def start(self) -> None:
        """Start every process and wait for all. Raises WorkerError, or the
        ModuleError or ModuleNotFound of a function the processes cannot serve."""
        started: list[WorkerProcess] = []
        try:
            started += [self._spawn() for _ in range(self.size)]
            for worker in started:
                self._ready(worker)
        except StockadeError:
            for worker in started:
                worker.close()
            raise
        first = started[0]
        functions = first.ready.get("functions", {})
        self.functions = {str(k): (str(v[0]), str(v[1])) for k, v in functions.items()}
        # Replacements load exactly these modules (checked by digest in the worker),
        # never what the files hold by then.
        self._plan = replace(self._plan, digests=tuple(
            (name, sha256) for name, (sha256, _) in self.functions.items()))
        self.protections = list(first.protections or ())
        with self._cond:
            self._all.update(started)
            self._idle.extend(started)
            self._cond.notify_all()
        logger.info("cordon %s: %d pool workers ready (pids %s): %s", self.cordon,
                    self.size, ", ".join(str(w.pid) for w in started),
                    "; ".join(f"{p.name} {'on' if p.active else 'off'}"
                              for p in self.protections))

    def _take(self, deadline: float, tenant: str | None) -> WorkerProcess:
        """An idle process for a run of `tenant`'s, counted as held by it (`_let_go`)."""
        with self._cond:
            while True:
                self._waiting[tenant] = self._waiting.get(tenant, 0) + 1
                try:
                    while not self._may_take(tenant):
                        if self._closed:
                            raise Unavailable("the server is shutting down", 1.0,
                                              reason="draining")
                        if not self._all and not self._starting:
                            self._replace_later()
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise Unavailable(self._busy(tenant), 1.0, reason="pool")
                        self._cond.wait(remaining)
                finally:
                    self._count_down(self._waiting, tenant)
                worker = self._idle.pop()
                if worker.alive:
                    self._held[tenant] = self._held.get(tenant, 0) + 1
                    return worker
                # It died while idle (killed, or its guest's last run took it down).
                self._all.discard(worker)
                worker.close()
                self._replace_later()

    def _may_take(self, tenant: str | None) -> bool:
        """Whether a run of `tenant`'s may take an idle process now (with the condition
        held): its first always; another within `tenant_share`, leaving one idle for
        each other tenant waiting for its first."""
        idle = len(self._idle)
        held = self._held.get(tenant, 0)
        if not idle or not held:
            return idle > 0
        if held >= self.tenant_share:
            return False
        first = sum(1 for other, runs in self._waiting.items()
                    if runs and other != tenant and not self._held.get(other, 0))
        return idle - 1 >= first

    def _busy(self, tenant: str | None) -> str:
        """Why a run of `tenant`'s found no process (with the condition held)."""
        held = self._held.get(tenant, 0)
        if held >= self.tenant_share and self.tenant_share < self.size:
            return (f"cordon {self.cordon}: tenant {tenant}'s runs hold {held} of its "
                    f"{self.size} pool workers, as many as one tenant may while others "
                    "share them")
        if self._idle and held:
            return (f"cordon {self.cordon}: the idle pool workers went to tenants waiting "
                    "for their first")
        return f"cordon {self.cordon}: all {self.size} pool workers are busy"

    @staticmethod
    def _count_down(counts: dict[str | None, int], tenant: str | None) -> None:
        left = counts.get(tenant, 0) - 1
        if left > 0:
            counts[tenant] = left
        else:
            counts.pop(tenant, None)

    def _let_go(self, tenant: str | None) -> None:
        """A run of `tenant`'s no longer holds its process (given back or retired)."""
        with self._cond:
            self._count_down(self._held, tenant)
            self._cond.notify_all()

    def _give_back(self, worker: WorkerProcess) -> None:
        with self._cond:
            if self._closed or self._retired:
                self._all.discard(worker)
                worker.close()
                self._cond.notify_all()  # a late run waiting starts its own
                return
            self._idle.append(worker)
            self._cond.notify()

    def _retire(self, worker: WorkerProcess) -> None:
        """Close `worker` and start its replacement in the background."""
        worker.close()
        with self._cond:
            self._all.discard(worker)
            if not self._closed and not self._retired:
                self._replace_later()
            self._cond.notify_all()

    def _replace_later(self) -> None:
        # Called with the condition held.
        self._starting += 1
        threading.Thread(target=self._replace, name="stockade-pool-start",
                         daemon=True).start()

    def _replace(self) -> None:
        worker: WorkerProcess | None = None
        try:
            worker = self._spawn()
            self._ready(worker)
            self._refuse(worker.ready.get("refused"))
        except StockadeError as exc:  # a module changed since, too: said, retried later
            logger.error("cordon %s: %s", self.cordon, exc.message)
            worker = None
            time.sleep(1.0)  # the next run asks again; do not spin on a broken set-up
        finally:
            with self._cond:
                self._starting -= 1
                if worker is not None:
                    if self._closed or (self._retired and not any(self._waiting.values())):
                        worker.close()
                    else:
                        self._all.add(worker)
                        self._idle.append(worker)
                self._cond.notify_all()

    def _refuse(self, refused: object) -> None:
        """Stop serving the functions a replacement could not load as validated (said
        once each: a replacement after every death said it again)."""
        if not isinstance(refused, dict):
            return
        with self._cond:
            for name, message in refused.items():
                if name in self.functions and name not in self.refused:
                    self.refused[name] = str(message)
                    logger.error("cordon %s: %s; it answers 503 until a reload",
                                 self.cordon, message)

    def run(self, spec: FunctionSpec, invocation: Invocation) -> Result:
        """Run `spec` once in a pool process. Raises Unavailable when no process is free
        within the function's timeout, or the Stockade error the worker reported."""
        timeout = spec.policy.limits.timeout
        wait = timeout if timeout is not None else START_TIMEOUT
        self._check_served(spec)
        worker = self._take(time.monotonic() + wait, spec.tenant)
        try:
            if spec.name in self.refused:  # learnt from the replacement it waited for
                self._give_back(worker)
                self._check_served(spec)
            return self._run_on(worker, spec, invocation)
        finally:
            self._let_go(spec.tenant)

    def _check_served(self, spec: FunctionSpec) -> None:
        if spec.name in self.refused:  # the file's name and digests go to the log only
            raise Unavailable(f"function {spec.name}: its module changed since the routes "
                              "were built; it is served again after a reload", 60.0,
                              reason="module")

    def _run_on(self, worker: WorkerProcess, spec: FunctionSpec,
                invocation: Invocation) -> Result:
        """`run` on the process taken for it, which is given back or retired."""
        timeout = spec.policy.limits.timeout
        begun = time.monotonic()
        deadline = None if timeout is None else begun + timeout + GRACE
        try:
            # Watched while the request is written as while its answer is awaited: a
            # stopped worker held the request's thread for ever, or until the deadline
            # blamed the guest. The body follows as a raw frame, from where it lies:
            # pickled, a 16 MiB body cost this process two more copies of it.
            stdin = invocation.stdin
            worker.send(("run", spec.name, len(stdin), tuple(invocation.env)), deadline,
                        GRACE)
            if stdin:
                worker.send_bytes(stdin, deadline, GRACE)
            kind, payload = worker.receive(deadline, self._reply_limit, GRACE)
        except WorkerStopped as exc:
            self._retire(worker)
            return self._failed(spec, begun, Outcome.ERROR, f"{exc}; its pool worker was "
                                "killed and replaced")
        except TimeoutError:
            self._retire(worker)
            return self._failed(spec, begun, Outcome.TIMEOUT,
                                f"no result within the {timeout:g} s timeout + {GRACE:g} s; "
                                "its pool worker was killed and replaced")
        except (EOFError, WorkerError) as exc:
            if isinstance(exc, EOFError):
                cause = worker.death_cause()
                outcome = worker.ended_as
            else:
                cause = str(exc)
                outcome = Outcome.MEMORY_LIMIT if worker.oom_killed() else Outcome.ERROR
            self._retire(worker)
            return self._failed(spec, begun, outcome, f"its pool worker ended: {cause}; "
                                "it was replaced")
        if kind == "memory":
            self._retire(worker)
            limit = payload.get("limit") if isinstance(payload, dict) else None
            size = format_size(limit) if isinstance(limit, int) else "its"
            return self._failed(spec, begun, Outcome.MEMORY_LIMIT,
                                "the run needed more host memory than its pool worker's "
                                f"{size} address space; the worker was replaced")
        if worker.resident() > self.memory_limit:
            # Over the pool's memory limit after the run (no cgroup, or a slow one).
            self._retire(worker)
            logger.warning("cordon %s: a pool worker grew past %s running %s; replaced",
                           self.cordon, format_size(self.memory_limit), spec.name)
        else:
            self._give_back(worker)
        if kind == "result":
            return result_from_wire(payload)
        if kind == "error":
            raise error_from_wire(payload)
        return self._failed(spec, begun, Outcome.ERROR,
                            f"its pool worker failed: {text_of(payload)}")

    def prepare(self, spec: FunctionSpec, observers: Sequence[RunObserver]) -> PooledFunction:
        """`spec`, one of this pool's functions, as run by the pool."""
        return PooledFunction(spec, self, observers)

    def _failed(self, spec: FunctionSpec, begun: float, outcome: Outcome,
                message: str) -> Result:
        sha256 = self.functions.get(spec.name, ("", ""))[0]
        return Result(module=spec.module.name, sha256=sha256, outcome=outcome,
                      exit_code=outcome.exit_code, message=message,
                      usage=Usage(wall_ms=(time.monotonic() - begun) * 1000),
                      limits=spec.policy.limits.as_dict())

    def close(self) -> None:
        """Kill idle processes now and busy ones when their run ends. Safe twice."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            for worker in idle:
                self._all.discard(worker)
            self._cond.notify_all()
        for worker in idle:
            worker.close()


class PooledFunction(Prepared):
    """A function that runs in its cordon's `WorkerPool` (observers are told here)."""

    kind = "pool"  # per instance: "pool-" and the executor inside the pool process

    def __init__(self, spec: FunctionSpec, pool: WorkerPool,
                 observers: Sequence[RunObserver]) -> None:
        sha256, inner = pool.functions.get(spec.name, ("", "none"))
        super().__init__(spec, sha256, observers)
        self.pool = pool
        self.kind = f"pool-{inner}"

    def run(self, invocation: Invocation) -> Result:
        """Run once in a pool process (a guest thread waits here)."""
        info = self._info(invocation) if self.observers else None
        if info is not None:
            notify_started(self.observers, info)
        result = self.pool.run(self.spec, invocation)
        if info is not None:
            notify_finished(self.observers, info, result)
        return result


def start_pools(specs: Sequence[FunctionSpec], executor: str, size: int,
                running: Mapping[str, WorkerPool] | None = None) -> dict[str, WorkerPool]:
    """A warm `WorkerPool` of `size` processes per cordon for the pooled functions among
    `specs` (blocking); `executor` is the `[server] executor` mode inside them. A pool
    of `running` (cordon -> pool: the routes served now) that `serves` its cordon's
    functions as they are is kept, not started again. Raises WorkerError when a pool
    cannot start (those started here are closed; kept ones are left running)."""
    cordons: dict[str, list[FunctionSpec]] = {}
    for spec in specs:
        if spec.pooled:
            cordons.setdefault(spec.cordon, []).append(spec)
    pools: dict[str, WorkerPool] = {}
    started: list[WorkerPool] = []
    try:
        for cordon, members in cordons.items():
            kept = (running or {}).get(cordon)
            if kept is not None and kept.serves(members, executor, size):
                pools[cordon] = kept
                logger.info("cordon %s: its functions did not change; its %d pool "
                            "workers are kept", cordon, kept.size)
                continue
            pools[cordon] = pool = WorkerPool(cordon, members, size, executor)
            started.append(pool)
            pool.start()
    except BaseException:
        for pool in started:
            pool.close()
        raise
    return pools

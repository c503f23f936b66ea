"""`WorkerPool`: a cordon's warm, confined worker processes, and `PooledFunction`.

    gateway worker (HTTP, quotas, breakers)
    └── WorkerPool per cordon: `size` processes (`poolworker.py`), each hardened and
        holding every module of the cordon prepared (fast path inside), one run at a time

A run takes an idle process, sends it the request over a pipe and waits for the result
with the function's timeout plus `GRACE`; no process is started per request. A process
that dies (crash, OOM kill, address-space limit), outlives its deadline, or ends a run
above the pool's memory limit is killed and replaced in the background; the run that
caused it gets `memory_limit`, `timeout` or `error`. Each process has its own cgroup
(memory, one core, tasks) when this machine has one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from ..invocation import Invocation
from ..isolate.cgroup import CgroupLimits, WorkerCgroup, create_cgroup
from ..isolate.protections import Protection
from ..isolate.protocol import (
    error_from_wire,
    read_reply,
    result_from_wire,
    write_frame,
)
from ..observe import RunObserver, notify_finished, notify_started
from ..policy.units import format_size
from ..result import Outcome, Result, Usage
from .executor import Prepared
from .manifest import FunctionSpec
from .poolworker import PoolPlan, worker_plan
from .problem import Unavailable

__all__ = ["WorkerPool", "PooledFunction", "GRACE", "MEMORY_OVERHEAD"]

logger = logging.getLogger("stockade.gateway")
GRACE = 1.0  # seconds past a function's timeout before its process is killed
START_TIMEOUT = 60.0  # seconds a pool process may take to harden and load its modules
MEMORY_OVERHEAD = 256 * 1024**2  # interpreter, engines and buffers, on top of guests
_REPLY_OVERHEAD = 1024**2
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_PAGE = resource.getpagesize()


class PoolProcess:
    """One pool process: its pipes, cgroup and stderr file. Used by one run at a time."""

    def __init__(self, plan: PoolPlan, limits: CgroupLimits | None) -> None:
        self.cgroup = create_cgroup(limits) if limits is not None else WorkerCgroup(0, {}, [])
        to_child, self._to = os.pipe()
        self._from, from_child = os.pipe()
        env = dict(os.environ, MALLOC_ARENA_MAX="2")  # each arena reserves address space
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT,
                                                          env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m",
                 "stockade.gateway.poolworker", str(to_child), str(from_child)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # stderr: the log
                pass_fds=(to_child, from_child), start_new_session=True, env=env)
        except OSError as exc:
            self.cgroup.remove()
            self._close_fds()
            raise WorkerError(f"cannot start a pool worker: {exc.strerror}") from None
        finally:
            os.close(to_child)
            os.close(from_child)
        self.pid = self.proc.pid
        self.cgroup.add(self.pid)
        self._oom_before = self.cgroup.oom_kills()
        self.functions: dict[str, tuple[str, str]] = {}
        self.protections: list[Protection] = []
        write_frame(self._to, plan)

    def wait_ready(self, timeout: float) -> None:
        """Wait for `ready`. Raises WorkerError with the cause."""
        try:
            kind, payload = self.receive(time.monotonic() + timeout, 1 << 20)
        except (TimeoutError, EOFError) as exc:
            self.kill()
            cause = "no answer" if isinstance(exc, TimeoutError) else self.death_cause()
            raise WorkerError(f"a pool worker did not start: {cause}") from None
        if kind != "ready" or not isinstance(payload, dict):
            self.kill()
            raise WorkerError(f"a pool worker answered {kind!r} instead of 'ready'")
        functions = payload.get("functions", {})
        self.functions = {str(k): (str(v[0]), str(v[1])) for k, v in functions.items()}
        self.protections = [Protection(str(n), bool(a), str(d))
                            for n, a, d in payload.get("protections", [])]

    def send(self, message: Any) -> None:
        """Send one request. Raises EOFError when the process is gone."""
        try:
            write_frame(self._to, message)
        except OSError:
            raise EOFError("the pool worker is gone") from None

    def receive(self, deadline: float | None, limit: int) -> tuple[str, Any]:
        """The next reply. Raises TimeoutError, EOFError, or WorkerError (malformed)."""
        return read_reply(self._from, deadline, limit)

    def resident(self) -> int:
        """Resident memory of the process in bytes (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer acted in this process's cgroup."""
        return self.cgroup.oom_kills() > self._oom_before

    def death_cause(self) -> str:
        """Why the process ended, in words (waits for it; its own last words are in the
        server's log)."""
        code = self.proc.wait()
        if self.oom_killed():
            return "the kernel OOM killer ended it at its cgroup memory limit"
        return f"it exited with {code}" if code >= 0 else f"signal {-code} ended it"

    def kill(self) -> None:
        """SIGKILL the process and its cgroup, wait, release everything. Safe twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.cgroup.kill_all()
        self.proc.wait()
        self.cgroup.remove()
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_to", "_from"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


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
        timeouts = [s.policy.limits.timeout or START_TIMEOUT for s in self.specs]
        # After a reload: how long this pool keeps serving runs routed before it.
        self.retire_after = 2 * (max(timeouts) + GRACE)
        self._plan = PoolPlan(cordon, self.specs, executor, worker_plan(self.specs),
                              log_level=logging.getLevelName(logger.getEffectiveLevel()))
        self._cgroup = (CgroupLimits(memory=self.memory_limit, cpu_quota=1.0, pids=64)
                        if cgroups else None)
        self._reply_limit = 2 * max(s.policy.limits.max_output for s in self.specs) \
            + _REPLY_OVERHEAD
        self._idle: list[PoolProcess] = []
        self._all: set[PoolProcess] = set()
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self.functions: dict[str, tuple[str, str]] = {}  # name -> (sha256, kind)
        self.protections: list[Protection] = []

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    @property
    def pids(self) -> list[int]:
        """Process ids of the pool's live processes."""
        with self._cond:
            return sorted(p.pid for p in self._all)

    def start(self) -> None:
        """Start every process and wait for all. Raises WorkerError."""
        started = [PoolProcess(self._plan, self._cgroup) for _ in range(self.size)]
        try:
            for process in started:
                process.wait_ready(START_TIMEOUT)
        except WorkerError:
            for process in started:
                process.kill()
            raise
        first = started[0]
        self.functions, self.protections = first.functions, first.protections
        with self._cond:
            self._all.update(started)
            self._idle.extend(started)
            self._cond.notify_all()
        logger.info("cordon %s: %d pool workers ready (pids %s): %s", self.cordon,
                    self.size, ", ".join(str(p.pid) for p in started),
                    "; ".join(f"{p.name} {'on' if p.active else 'off'}"
                              for p in self.protections))

    def _take(self, deadline: float) -> PoolProcess:
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise Unavailable("the server is shutting down", 1.0, reason="draining")
                if not self._all and not self._starting:
                    self._replace_later()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(f"cordon {self.cordon}: all {self.size} pool workers "
                                      "are busy", 1.0, reason="pool")
                self._cond.wait(remaining)
            process = self._idle.pop()
            if process.proc.poll() is None:
                return process
            # It died while idle (killed, or its guest's last run took it down).
            self._all.discard(process)
            process.kill()
            self._replace_later()
        return self._take(deadline)

    def _give_back(self, process: PoolProcess) -> None:
        with self._cond:
            if self._closed:
                self._all.discard(process)
                process.kill()
                return
            self._idle.append(process)
            self._cond.notify()

    def _retire(self, process: PoolProcess) -> None:
        """Kill `process` and start its replacement in the background."""
        process.kill()
        with self._cond:
            self._all.discard(process)
            if not self._closed:
                self._replace_later()

    def _replace_later(self) -> None:
        # Called with the condition held.
        self._starting += 1
        threading.Thread(target=self._replace, name="stockade-pool-start",
                         daemon=True).start()

    def _replace(self) -> None:
        process: PoolProcess | None = None
        try:
            process = PoolProcess(self._plan, self._cgroup)
            process.wait_ready(START_TIMEOUT)
        except WorkerError as exc:
            logger.error("cordon %s: %s", self.cordon, exc.message)
            process = None
            time.sleep(1.0)  # the next run asks again; do not spin on a broken set-up
        finally:
            with self._cond:
                self._starting -= 1
                if process is not None:
                    if self._closed:
                        process.kill()
                    else:
                        self._all.add(process)
                        self._idle.append(process)
                self._cond.notify_all()

    def run(self, spec: FunctionSpec, invocation: Invocation) -> Result:
        """Run `spec` once in a pool process. Raises Unavailable when no process is free
        within the function's timeout, or the Stockade error the worker reported."""
        timeout = spec.policy.limits.timeout
        wait = timeout if timeout is not None else START_TIMEOUT
        process = self._take(time.monotonic() + wait)
        begun = time.monotonic()
        deadline = None if timeout is None else begun + timeout + GRACE
        try:
            process.send(("run", spec.name, invocation.stdin, tuple(invocation.env)))
            kind, payload = process.receive(deadline, self._reply_limit)
        except TimeoutError:
            self._retire(process)
            return self._failed(spec, begun, Outcome.TIMEOUT,
                                f"no result within the {timeout:g} s timeout + {GRACE:g} s; "
                                "its pool worker was killed and replaced")
        except (EOFError, WorkerError) as exc:
            cause = process.death_cause() if isinstance(exc, EOFError) else str(exc)
            outcome = Outcome.MEMORY_LIMIT if process.oom_killed() else Outcome.ERROR
            self._retire(process)
            return self._failed(spec, begun, outcome, f"its pool worker ended: {cause}; "
                                "it was replaced")
        if kind == "memory":
            self._retire(process)
            limit = payload.get("limit") if isinstance(payload, dict) else None
            size = format_size(limit) if isinstance(limit, int) else "its"
            return self._failed(spec, begun, Outcome.MEMORY_LIMIT,
                                "the run needed more host memory than its pool worker's "
                                f"{size} address space; the worker was replaced")
        if process.resident() > self.memory_limit:
            # Over the pool's memory limit after the run (no cgroup, or a slow one).
            self._retire(process)
            logger.warning("cordon %s: a pool worker grew past %s running %s; replaced",
                           self.cordon, format_size(self.memory_limit), spec.name)
        else:
            self._give_back(process)
        if kind == "result":
            return result_from_wire(payload)
        if kind == "error":
            raise error_from_wire(payload)
        message = payload.get("message") if isinstance(payload, dict) else payload
        return self._failed(spec, begun, Outcome.ERROR, f"its pool worker failed: {message}")

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
            for process in idle:
                self._all.discard(process)
            self._cond.notify_all()
        for process in idle:
            process.kill()


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


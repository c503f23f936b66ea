"""`IsolatedSandbox`: the in-process `Sandbox` interface, served by a hardened worker.

    with IsolatedSandbox(policy) as sandbox:
        result = sandbox.run("hello.wasm", Invocation(args=("world",)))

One worker process serves the runs of one `IsolatedSandbox`, one at a time, and is
reused while it lives. The parent holds the deadline, on its own clock: loading may
take `load_timeout`, then the guest gets the policy's timeout plus `grace` (never past
`load_timeout` + timeout + `grace` from the request, whatever the worker sends), after
which the worker is killed (outcome `timeout`); writing the request counts as loading. A
worker that stays stopped (SIGSTOP, a tracer) `grace` seconds while it is handed a run or
an answer is awaited is killed then (outcome `error`: the host's failure, not the
guest's, loading or running); one found stopped between runs is replaced before it is
handed the next. A run's `CancelToken` reaches its worker from the first byte of the
request. The memory a large standard input is allowed (`IsolationConfig`) ends with
its run: a worker whose limit cannot be brought back (it still holds more) is replaced.
A C-API worker under a policy without a fuel budget has no epoch checks in its compiled
code (`IsolationConfig.process_deadline`):
at the guest's timeout it sends the result an epoch interrupt would have made
(`overran`) and ends itself (`isolate.overrun`); it is reaped and replaced, as a killed
one is. So that the run after a timeout does not wait for a worker to start and harden,
such a sandbox keeps one spare worker, started from its second run on (a one-shot
sandbox pays for none), which takes over when the current one is lost; never more than
one. Module files are read here and sent as bytes: the worker cannot open the caller's
files; one that cannot be read to its end as it is sent (a read error, or it shrank)
fails the run with ModuleError naming it, as in process, and the worker handed part
of it is replaced. A worker that dies (cgroup OOM kill, crash, SIGKILL) yields outcome
`error` with the cause; either way a fresh worker (or the spare) replaces it and the
caller goes on. `interrupt()` ends the run in progress the same way (outcome `error`),
whenever it lands: while its worker starts, as its request is written, or later.

The worker runs the C-API backend (`CapiSandbox`) unless `sandbox.backend` refuses the
policy or the module (then wasmtime-py's `Sandbox`); a module the C-API worker leaves to
wasmtime-py (it answers `fallback` before the guest starts: not a module, refused by the
compile guard or validation, denied imports) is sent to a wasmtime-py worker, whose
loading gets what is left of the run's one `load_timeout` (a module the C API compiles
slowly, then refuses, is not given two), and which serves until a run needs the other.

A `.cwasm` this host sealed is checked here under the host's key (the worker holds only
its scope's) and its digest handed to the running worker before the run (`vouch`: no
restart); new workers start with the `_MAX_VOUCHED` most recently run, and a worker told
of more is replaced by one started with those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cancel import CANCELLED, current_token
from ..digests import sha256
from ..engine.cache import AotCache
from ..errors import ModuleError, PrecompiledRefused, StockadeError, UsageError, WorkerError
from ..fileid import path_key
from ..invocation import Invocation
from ..modulearg import module_argument
from ..observe import RunInfo, RunObserver, notify_finished, notify_started
from ..policy import Policy
from ..result import Outcome, Result, Usage
from ..rmtree import remove_tree
from ..sandbox.arguments import invocation_argument, policy_argument
from ..sandbox.backend import Backend, use_capi
from ..sandbox.methods import RunMethods
from ..sandbox.provenance import denied_result, gate
from ..sandbox.wasi import checked_preopens
from .config import IsolationConfig
from .handle import WorkerProcess, WorkerStopped
from .modules import ModuleFile, open_module
from .plan import WorkerPlan, cgroup_limits_for, plan_for, vouched_files
from .protections import Protection
from .protocol import SourceUnreadable, error_from_wire, result_from_wire, text_of
from .reseal import Resealer

__all__ = ["IsolatedSandbox"]

_RETIRE = object()
_FALLBACK = object()
_LOST = object()  # the worker was gone before it took the run
_MAX_LEFT_TO_WASMTIME = 256
# The `.cwasm` digests a sandbox vouches for (most recently run first kept) and a worker
# may hold: a worker told of one more starts afresh with the most recent ones.
_MAX_VOUCHED = 64
# Standard input a worker's memory overhead (`IsolationConfig.memory_overhead`) covers.
_STDIN_COVERED = 16 * 1024**2


def _module_key(module: str | Path | bytes) -> object | None:
    """What identifies a module between runs: the digest of bytes, the identity and
    version of a file (a wrong match only sends a module to wasmtime-py, which gives
    the canonical answer), None when the file cannot be read here."""
    if isinstance(module, bytes):
        return sha256(module).digest()
    return path_key(module)


class IsolatedSandbox(RunMethods):
    """Runs modules under one policy in a worker process (see the module docstring).

    Same methods as `stockade.Sandbox`: `run(module, invocation) -> Result`,
    `run_python`, `run_async`, `close()`, `with`. `module` is a path or module bytes
    (UsageError otherwise, and once closed). Raises ModuleNotFound, ModuleError or
    PolicyError as the in-process sandbox does (reported by the worker), and
    WorkerError when no worker can be started. Thread-safe: runs
    are serialised (use one `IsolatedSandbox` per concurrent run).
    """

    def __init__(self, policy: Policy | None = None, *, observers: Sequence[RunObserver] = (),
                 config: IsolationConfig | None = None) -> None:
        self.policy = policy_argument(policy, "IsolatedSandbox")
        self.observers = tuple(observers)
        self.config = config or IsolationConfig()
        self._plan = plan_for(self.policy, self.config)
        self._plans: dict[Backend, WorkerPlan] = {self._plan.backend: self._plan}
        self._cgroup_limits = (cgroup_limits_for(self.policy, self.config)
                               if self.config.cgroup else None)
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None
        self._worker_backend: Backend = self._plan.backend
        # A started worker for the plan's backend, kept when that worker ends itself at a
        # run's deadline (`process_deadline`): the run after a timeout must not wait for a
        # start-up. Kept from a sandbox's second run on (a one-shot sandbox pays for none).
        self._spare: WorkerProcess | None = None
        self._served = 0  # runs answered
        self._interrupts = 0  # `interrupt()` calls: a run sees one made while it went on
        self._lost_cause: str | None = None  # why the last worker went before its run
        # `.cwasm` digests this host vouched for, oldest first (at most _MAX_VOUCHED).
        self._vouched: OrderedDict[str, None] = OrderedDict()
        # Modules the C-API loader left to wasmtime-py: sent straight there next time, so a
        # module that falls back does not cost a compile and two worker starts per run.
        self._left_to_wasmtime: OrderedDict[object, None] = OrderedDict()
        self._closed = False
        # This host's compiled code, copied into the workers' AoT scope before a module
        # is sent: a scoped worker must not compile what this host already has.
        # Under the cap its workers are handed (`WorkerPlan.cache_max_bytes`).
        self._resealer = (Resealer(AotCache(self._plan.cache,
                                            max_bytes=self._plan.cache_max_bytes),
                                   self._plan.cache_scope, self.policy.limits)
                          if self._plan.cache is not None and self._plan.cache_scope else None)
        limits = self.policy.limits
        self._reply_limit = 2 * limits.max_output + 16 * 1024**2

    # -- workers ------------------------------------------------------------------------

    def _start(self, backend: Backend) -> WorkerProcess:
        """A new worker for `backend` (its `ready` not awaited)."""
        plan = self._plans.get(backend)
        if plan is None:
            plan = self._plans[backend] = dataclasses.replace(
                self._plan, backend=backend,
                process_deadline=self._plan.process_deadline and backend == "capi")
        return WorkerProcess(plan, self._cgroup_limits, self.config.python)

    def _spawn(self, backend: Backend | None = None, fresh: bool = False) -> WorkerProcess:
        """Make the spare (unless `fresh`) or a new worker the current one."""
        backend = backend or self._plan.backend
        spare = None if fresh else self._take_spare(backend)
        self._worker = spare or self._start(backend)
        self._worker_backend = backend
        return self._worker

    def _take_spare(self, backend: Backend) -> WorkerProcess | None:
        """The spare, when it is alive and runs `backend`; else None (a dead one is
        reaped)."""
        spare = self._spare
        if spare is None or backend != self._plan.backend:
            return None
        self._spare = None
        if spare.alive and not spare.stopped():
            return spare
        spare.close()
        return None

    def _refill(self) -> None:
        """Start the spare when none is kept and the plan's workers end themselves at a
        run's deadline; a sandbox's first run starts none (see `__init__`)."""
        if self._spare is not None or self._closed or self._served < 2 \
                or not (self._plan.process_deadline and self.config.spare_worker):
            return
        # Best effort: without one, the run after a timeout waits for a start-up.
        with contextlib.suppress(WorkerError):
            self._spare = self._start(self._plan.backend)

    def _vouch(self, path: Path) -> frozenset[str]:
        """The digest of `path` when it is a `.cwasm` this host sealed (empty otherwise):
        the worker holds only its scope's key (`seal.scoped_key`), so this process
        checks it under the host's and the worker accepts exactly those bytes
        (`_hand_over`). Reads the file; no lock needed."""
        return vouched_files([(path, self.policy.limits.max_module_size)])

    def _remember(self, found: frozenset[str]) -> None:
        """Put `found` first among the digests new workers start with, keeping the
        `_MAX_VOUCHED` most recently run (under the lock)."""
        for digest in found:
            self._vouched[digest] = None
            self._vouched.move_to_end(digest)
        while len(self._vouched) > _MAX_VOUCHED:
            self._vouched.popitem(last=False)
        vouched = frozenset(self._vouched)
        if vouched != self._plan.vouched:
            self._plan = dataclasses.replace(self._plan, vouched=vouched)
            self._plans = {backend: dataclasses.replace(plan, vouched=vouched)
                           for backend, plan in self._plans.items()}

    @staticmethod
    def _hand_over(worker: WorkerProcess, found: frozenset[str]) -> bool:
        """Tell a running worker the digests in `found` it does not hold yet (no restart:
        the pipe is this process's alone, as the plan it started with). False when that
        would take it past `_MAX_VOUCHED`: then a worker started afresh must take the
        run. Raises EOFError when the worker is gone."""
        missing = found - worker.vouched
        if not missing:
            return True
        if len(worker.vouched) + len(missing) > _MAX_VOUCHED:
            return False
        worker.send(("vouch", frozenset(missing)))
        worker.vouched |= missing
        return True

    def _ready_worker(self, backend: Backend | None = None,
                      fresh: bool = False) -> WorkerProcess:
        if self._closed:
            raise UsageError("this IsolatedSandbox is closed")
        backend = backend or self._plan.backend
        worker = self._worker
        # A stopped worker (SIGSTOP) would hold the run to its load timeout: replaced.
        if fresh or worker is None or not worker.alive or self._worker_backend != backend \
                or worker.stopped():
            self._discard()
            worker = self._spawn(backend, fresh)
        try:
            worker.wait_ready(self.config.start_timeout, self.config.grace)
        except WorkerError:
            self._discard()
            raise
        return worker

    def _lose(self, worker: WorkerProcess) -> None:
        """Kill `worker`, whose pipe may hold part of a request or a reply no one will
        read (the next run would take it for its own); a fresh worker serves the next
        run."""
        worker.kill()
        if self._worker is worker:
            self._discard()

    def _discard(self, respawn: bool = False) -> None:
        """Drop the current worker; with `respawn`, its replacement (same backend) is the
        spare, or one started right away so its start-up overlaps whatever the caller
        does next."""
        backend = self._worker_backend
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if respawn and not self._closed:
            # Best effort: a failure to start surfaces on the next request instead.
            with contextlib.suppress(WorkerError):
                self._spawn(backend)

    @property
    def backend(self) -> Backend:
        """The backend this sandbox's runs get (`capi` or `wasmtime`), unless a module
        falls back to wasmtime-py (see the module docstring)."""
        return self._plan.backend

    @property
    def worker_backend(self) -> str | None:
        """The backend the current worker said it runs in its `ready`, if one is ready."""
        worker = self._worker
        if worker is None or not worker.alive:
            return None
        backend = worker.ready.get("backend")
        return backend if isinstance(backend, str) else None

    @property
    def worker_pid(self) -> int | None:
        """The process id of the current worker, if one is running."""
        return self._worker.pid if self._worker is not None and self._worker.alive else None

    @property
    def spare_pid(self) -> int | None:
        """The process id of the spare worker, if one is kept and running."""
        return self._spare.pid if self._spare is not None and self._spare.alive else None

    @property
    def vouched(self) -> frozenset[str]:
        """The sha256 digests of the `.cwasm` files new workers start vouched for (the
        most recently run, at most `_MAX_VOUCHED`)."""
        return self._plan.vouched

    def protections(self) -> list[Protection]:
        """The protections of the worker (started if needed): active or why not."""
        with self._lock:
            return list(self._ready_worker().wait_ready(self.config.start_timeout))

    def check(self, name: str, arg: int = 0) -> dict[str, Any]:
        """Run a named self-check in the worker (see `stockade.isolate.checks`).

        Returns `{"held": bool, "detail": str, "value": ...}`. Raises WorkerError with
        the cause when the worker dies during the check (it is then replaced).
        """
        with self._lock:
            worker = self._ready_worker()
            try:
                worker.send(("check", name, arg))
                kind, payload = worker.receive(time.monotonic() + self.config.start_timeout,
                                               self._reply_limit, self.config.grace)
            except (EOFError, TimeoutError, WorkerStopped) as exc:
                worker.kill()
                cause = worker.death_cause() if isinstance(exc, EOFError) else \
                    str(exc) if isinstance(exc, WorkerStopped) else "no answer"
                self._discard(respawn=True)
                raise WorkerError(f"check {name!r}: {cause}") from None
            except BaseException:  # its answer would be read as the next request's
                self._lose(worker)
                raise
            if kind != "checked" or not isinstance(payload, dict):
                self._lose(worker)
                raise WorkerError(f"check {name!r}: unexpected reply {kind!r}")
            return payload

    # -- runs ---------------------------------------------------------------------------

    def run(self, module: str | Path | bytes, invocation: Invocation | None = None) -> Result:
        """Run the module's `_start` once in the worker and report what happened."""
        module = module_argument(module, "isolated Sandbox")
        invocation = invocation_argument(invocation, "IsolatedSandbox.run")
        if self._closed:
            raise UsageError("this IsolatedSandbox is closed")
        verdict = gate(module, self.policy)  # here: the worker cannot read trusted keys
        if verdict is not None:
            if verdict.data is None:
                return denied_result(verdict, self.policy, invocation, self.observers)
            module = verdict.data  # the verified bytes, not a second read of the file
        env = {name: os.environ.get(name) for name in self.policy.capabilities.env_allow}
        # Checked here, as the caller sees the filesystem: the worker's uid may not even
        # reach the place where a missing directory would be.
        checked_preopens(self.policy)
        found: frozenset[str] = frozenset()
        if self.policy.capabilities.allow_precompiled and not isinstance(module, bytes):
            found = self._vouch(Path(module))
        backend = self._plan.backend
        if backend == "capi" and not isinstance(module, bytes) \
                and not use_capi(self.policy, Path(module)):
            backend = "wasmtime"  # a .cwasm: native code mapped by wasmtime-py only
        key = _module_key(module) if backend == "capi" else None
        if key is not None and key in self._left_to_wasmtime:
            backend = "wasmtime"
        loaded = 0.0  # seconds a worker that left the module to wasmtime-py spent loading
        token = current_token()
        with self._lock:
            if found:
                self._remember(found)
            self._lost_cause = None
            interrupts = self._interrupts
            for _ in range(3):
                try:
                    worker = self._ready_worker(backend)  # kept for the next run if cancelled
                except WorkerError:
                    if self._interrupts == interrupts:
                        raise
                    return self._interrupted(module)  # it killed the worker as it started
                if self._interrupts != interrupts:
                    # While this run moved to another worker, which it could not reach yet.
                    return self._interrupted(module)
                if token is not None and token.cancelled:  # waiting for the lock or the worker
                    return self._synthetic(module, None, time.monotonic(), CANCELLED.outcome,
                                           CANCELLED.message)
                try:
                    if found and not self._hand_over(worker, found):
                        worker = self._ready_worker(backend, fresh=True)
                except EOFError:
                    self._discard()
                    continue
                except WorkerError:  # the fresh worker did not start (it is discarded)
                    if self._interrupts == interrupts:
                        raise
                    return self._interrupted(module)
                except BaseException:  # part of a request may be in the pipe
                    self._lose(worker)
                    raise
                request = self._request(worker, module, invocation, env)
                begun = time.monotonic()
                stop = _StopWorker(worker)
                # This run's token stops this run's worker, never the sandbox's current
                # one: `interrupt()` from a cancelled task killed whichever run was in
                # progress, another caller's (found by review). Attached before the
                # request is written: a worker that stops reading holds the write too.
                if token is not None:
                    token.attach(None, stop, None)
                try:
                    worker.allow_memory(_stdin_allowance(invocation))
                    outcome = self._collect(worker, module, invocation, request, loaded, stop,
                                            interrupts=interrupts)
                except BaseException:
                    # Ctrl-C (or any exception) between the request and its reply: the
                    # worker would go on and its reply be read as the next run's.
                    self._lose(worker)
                    raise
                finally:
                    request.close()
                    # The memory allowed for a large standard input must not outlive
                    # its run: a worker the kernel cannot bring back under its limit
                    # (it holds more) would run the next guest with the limit raised.
                    lowered = worker.allow_memory(0)
                    if token is not None:
                        token.disarm()
                    # Killed, maybe after its answer was read (a result or an error):
                    # never the next run's worker (a late cancellation killed the next
                    # caller's run, found by review).
                    if (stop.fired or not lowered) and self._worker is worker:
                        self._discard(respawn=True)
                if outcome is _LOST:
                    if self._worker is worker:
                        self._discard()
                    continue
                if outcome is _FALLBACK:
                    # The next worker gives the canonical answer, within what is left of
                    # the one load timeout: a module the C API compiles slowly and then
                    # refuses must not be given a second whole one.
                    loaded += time.monotonic() - begun
                    backend = "wasmtime"
                    if key is not None:
                        self._left_to_wasmtime[key] = None
                        while len(self._left_to_wasmtime) > _MAX_LEFT_TO_WASMTIME:
                            self._left_to_wasmtime.popitem(last=False)
                    continue
                if isinstance(outcome, StockadeError):  # the worker's answer: it goes on
                    raise outcome
                if not isinstance(outcome, Result):  # retired: its CPU budget is spent
                    if self._worker is worker:  # not the spare promoted in its place
                        self._discard(respawn=True)
                    continue
                worker.runs += 1
                if self.config.max_runs is not None and worker.runs >= self.config.max_runs \
                        and self._worker is worker:
                    self._discard(respawn=True)
                self._served += 1
                self._refill()
                return outcome
        cause, self._lost_cause = self._lost_cause, None
        raise WorkerError("the worker could not take the run (CPU budget or start-up)"
                          + (f": {cause}" if cause else ""))

    def _request(self, worker: WorkerProcess, module: str | Path | bytes,
                 invocation: Invocation, env: dict[str, str | None],
                 resend: bool = False) -> _Request:
        """The run request, to be sent (`_Request.send`) and closed: a module path is
        opened here (the worker cannot), and its bytes follow the request."""
        source: ModuleFile | bytes
        fd = None
        if isinstance(module, bytes):
            source = module
        else:
            path = Path(module)
            held = not resend and self._held(worker, path)
            source, fd = open_module(path, self.policy.limits.max_module_size, held)
        try:
            if self._resealer is not None and (fd is not None or isinstance(source, bytes)):
                # Before the load timeout is armed (`_collect`): the copy is this side's.
                deadline = self._plans[self._worker_backend].process_deadline
                self._resealer.prepare(module, self._worker_backend, deadline)
            # The standard input follows as a raw frame: pickled, 256 MiB cost the worker
            # three times that while it read the request.
            stdin = invocation.stdin
            if stdin:
                invocation = dataclasses.replace(invocation, stdin=b"")
            message = ("run", source, invocation, env, os.getcwd(), len(stdin))
        except BaseException:  # Ctrl-C while the copy is hashed; a deleted working directory
            if fd is not None:
                os.close(fd)
            raise
        if isinstance(source, ModuleFile):
            worker.sent.add(source.key)
            return _Request(message, fd, source.size, stdin, source.path)
        return _Request(message, fd, 0, stdin)

    @staticmethod
    def _held(worker: WorkerProcess, path: Path) -> bool:
        key = path_key(path)
        return key is not None and key in worker.sent

    def _collect(self, worker: WorkerProcess, module: str | Path | bytes,
                 invocation: Invocation, request: _Request,
                 loaded: float, stop: _StopWorker, *, interrupts: int) -> Result | object:
        """Send `request` and see the run through to its answer (a Result, an error to
        raise, or what the caller does next: `_RETIRE`, `_FALLBACK`, `_LOST`);
        `interrupts`: the count of `interrupt()` calls when the run began."""
        # The deadline is this process's alone, armed from its own clock: loading may
        # take `load_timeout` (less the `loaded` seconds an earlier worker spent on this
        # run), the guest its timeout + grace, and nothing the worker sends moves either
        # (a worker that took over its guest could otherwise hold the caller forever
        # with `started` frames). Writing the request counts as loading: a worker that
        # stops reading it is found stopped, or timed out, as one that stops answering.
        begun = time.monotonic()
        load = self.config.load_seconds(self.policy)
        if load is not None:
            load = max(0.0, load - loaded)
        limit = self.config.deadline(self.policy)
        deadline = None if load is None else begun + load
        final = None if load is None or limit is None else begun + load + limit
        info: RunInfo | None = None
        resent = False
        sending: _Request | None = request  # written before the next reply is awaited
        while True:
            writing = sending is not None
            try:
                if sending is not None:
                    try:
                        sending.send(worker, deadline, self.config.grace)
                    finally:
                        if sending is not request:  # a resend's: the caller closes `request`
                            sending.close()
                    sending = None
                writing = False
                kind, payload = worker.receive(deadline, self._reply_limit, self.config.grace)
            except (TimeoutError, WorkerStopped) as exc:
                # A stopped worker is the host's failure, whoever stopped it: no guest
                # overran its time in a process that could not run.
                cause = str(exc) if isinstance(exc, WorkerStopped) else \
                    "the worker was stopped (SIGSTOP or a tracer) and gave no answer by its " \
                    "deadline" if worker.stopped() else \
                    "the worker did not take the whole request within the load timeout " \
                    "(a large module or standard input on a slow host)" if writing else None
                worker.kill()
                result = self._killed(module, info, begun, started=info is not None) \
                    if cause is None else self._synthetic(
                        module, info, begun, Outcome.ERROR, f"{cause}; it was killed (SIGKILL)")
                self._discard(respawn=True)
                result.cleanup_error = self._remove_scratch(info, worker)
                return self._finish(info, result, worker.pid, invocation)
            except EOFError:
                # Killed by its token or by `interrupt()`: its run ends, not retried.
                stopped = stop.fired or self._interrupts != interrupts
                if sending is request and not stopped:
                    # Gone before it took the run: another worker takes it, and if none
                    # can, the caller is told why this one went.
                    self._lost_cause = worker.death_cause()
                    return _LOST
                cause = worker.death_cause()
                if stop.fired and worker.ended_as is Outcome.ERROR:
                    cause = CANCELLED.message  # its token's kill: said so to observers too
                result = self._synthetic(module, info, begun, worker.ended_as, cause)
                self._discard(respawn=True)
                result.cleanup_error = self._remove_scratch(info, worker)
                return self._finish(info, result, worker.pid, invocation)
            if kind == "started" and isinstance(payload, dict) and info is None:
                info = self._info(payload, worker, invocation)
                notify_started(self.observers, info)
                if limit is None:
                    deadline = None
                else:
                    ends = time.monotonic() + limit
                    deadline = ends if final is None else min(ends, final)
            elif kind == "started":
                continue  # only the first one counts; the deadline stays where it is
            elif kind == "resend" and not resent and info is None:
                resent = True
                sending = self._request(worker, module, invocation, request.message[3],
                                        resend=True)
            elif kind == "result":
                return self._finish(info, result_from_wire(payload), worker.pid, invocation)
            elif kind == "overran":  # its deadline's result; the worker is ending itself
                result = result_from_wire(payload)
                worker.kill()  # reaped here, whatever it was still doing
                self._discard(respawn=True)
                result.cleanup_error = self._remove_scratch(info, worker)
                return self._finish(info, result, worker.pid, invocation)
            elif kind == "error":
                error = error_from_wire(payload)
                if isinstance(error, PrecompiledRefused):  # `denied`, as in process
                    refused = self._synthetic(module, info, begun, Outcome.DENIED,
                                              error.message)
                    refused.sha256 = error.sha256
                    return self._finish(info, refused, worker.pid, invocation)
                return error
            elif kind == "retire":
                return _RETIRE
            elif kind == "fallback" and info is None and self._worker_backend == "capi":
                return _FALLBACK
            elif kind == "failed":  # the run's answer: the worker goes on
                return WorkerError(f"the worker failed: {text_of(payload)}")
            else:  # out of turn: the pipe cannot be trusted (the caller kills the worker)
                raise WorkerError(f"the worker answered {kind!r} out of turn")

    def _info(self, payload: dict[str, Any], worker: WorkerProcess,
              invocation: Invocation) -> RunInfo:
        """The run the worker's `started` tells of. The directories it names as written
        (which the monitor walks, as this process) are taken only when they are the
        policy's writable grants or directly in the worker's temporary directory (its
        scratch directory): a taken-over worker named `/`."""
        granted = [g.host for g in self.policy.capabilities.dirs if g.writable]
        dirs = payload.get("writable_dirs")
        writable = tuple(granted)
        if isinstance(dirs, list):  # a grant as the policy holds it, or as it is shown
            allowed = {str(path) for grant in self.policy.capabilities.dirs if grant.writable
                       for path in (grant.host, grant.shown)}
            temp = os.path.realpath(worker.temp_dir)
            writable = tuple(Path(d) for d in dirs[:len(granted) + 1] if isinstance(d, str) and (
                d in allowed or os.path.dirname(os.path.realpath(d)) == temp))
        started = payload.get("started")
        return RunInfo(
            module=text_of(payload, "module"), sha256=text_of(payload, "sha256"),
            invocation=invocation, policy=self.policy,
            started=started if isinstance(started, float) else time.time(), pid=worker.pid,
            writable_dirs=writable, coldstart=bool(payload.get("coldstart", False)),
        )

    def _remove_scratch(self, info: RunInfo | None, worker: WorkerProcess) -> str | None:
        """A killed worker cannot remove its run's scratch directory: do it here.
        Returns what could not be removed, or None."""
        capabilities = self.policy.capabilities
        if info is None or capabilities.scratch is None or capabilities.keep_scratch:
            return None
        from ..sandbox.scratch import SCRATCH_PREFIX  # here: the parent stays free of wasmtime

        granted = {g.host for g in capabilities.dirs}
        tmp = worker.temp_dir.resolve()
        failures = []
        for path in info.writable_dirs:
            # Only a directory the worker made for this run: in its temporary directory,
            # named as `Scratch` names it, and not one the policy granted.
            if (path not in granted and path.parent.resolve() == tmp
                    and path.name.startswith(SCRATCH_PREFIX)):
                failure = remove_tree(path)
                if failure is not None:
                    failures.append(failure)
        return "; ".join(failures) or None

    def _finish(self, info: RunInfo | None, result: Result, pid: int,
                invocation: Invocation) -> Result:
        if info is None:
            info = RunInfo(module=result.module, sha256=result.sha256, invocation=invocation,
                           policy=self.policy, started=time.time(), pid=pid,
                           coldstart=result.coldstart)
        notify_finished(self.observers, info, result)
        return result

    def _synthetic(self, module: str | Path | bytes, info: RunInfo | None, begun: float,
                   outcome: Outcome, message: str) -> Result:
        name = info.module if info else ("<bytes>" if isinstance(module, bytes)
                                         else Path(module).name)
        return Result(
            module=name, sha256=info.sha256 if info else "", outcome=outcome,
            exit_code=outcome.exit_code, message=message,
            usage=Usage(wall_ms=(time.monotonic() - begun) * 1000),
            limits=self.policy.limits.as_dict(), coldstart=info.coldstart if info else False,
        )

    def _interrupted(self, module: str | Path | bytes) -> Result:
        """The run `interrupt()` stopped before a worker took it (the worker it was to
        have was starting, or the run was moving to another): outcome `error`, as an
        interrupt at any other moment of a run gives; the next run gets a fresh worker."""
        return self._synthetic(module, None, time.monotonic(), Outcome.ERROR,
                               "interrupted (IsolatedSandbox.interrupt) before a worker "
                               "took the run")

    def _killed(self, module: str | Path | bytes, info: RunInfo | None, begun: float,
                started: bool) -> Result:
        if started:
            message = (f"no result within the {self.policy.limits.timeout:g} s timeout + "
                       f"{self.config.grace:g} s grace; the worker was killed (SIGKILL)")
        else:
            message = (f"loading the module took longer than "
                       f"{self.config.load_seconds(self.policy) or 0:g} s; "
                       "the worker was killed (SIGKILL)")
        return self._synthetic(module, info, begun, Outcome.TIMEOUT, message)

    def interrupt(self) -> None:
        """Stop the run in progress now, whichever it is: its worker is killed (SIGKILL),
        the run reports outcome `error`, and a fresh worker serves the next run. Callable
        from any thread. To stop one run, cancel its `CancelToken` (`cancellable`), as
        `AsyncSandbox` and `SandboxPool` do: this stops another's run if that one ended."""
        self._interrupts += 1  # first: the run sees it as soon as its worker is gone
        worker = self._worker
        if worker is not None and worker.alive:
            worker.kill()

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker and remove its cgroup. Safe to call twice."""
        with self._lock:
            self._closed = True
            self._discard()
            spare, self._spare = self._spare, None
            if spare is not None:
                spare.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called (runs then raise UsageError)."""
        return self._closed

    def __enter__(self) -> IsolatedSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stdin_allowance(invocation: Invocation) -> int:
    """Bytes a worker's cgroup must hold for a run on top of its usual limit: the
    standard input, held once by the worker and copied once more by an engine that
    takes it whole (WASI's `stdin_bytes`); none for what its overhead covers."""
    size = len(invocation.stdin)
    return 2 * size if size > _STDIN_COVERED else 0


@dataclasses.dataclass
class _Request:
    """A run request as the worker reads it: `message`, then, when `fd` is set, `size`
    bytes of the module file it is open on (`path`, as the caller named it), then `stdin`
    (each a raw frame)."""

    message: tuple[Any, ...]
    fd: int | None
    size: int
    stdin: bytes
    path: str = ""

    def send(self, worker: WorkerProcess, deadline: float | None, stall: float) -> None:
        """Write it all. Raises as `WorkerProcess.send`, and ModuleError naming the
        module file when it cannot be read to its end (a read error, or it shrank), as
        the in-process sandbox reports a file it cannot read; the worker, handed part of
        the request, must then be killed (as after any exception here)."""
        worker.send(self.message, deadline, stall)
        if self.fd is not None:
            try:
                worker.send_file(self.fd, self.size, deadline, stall)
            except SourceUnreadable as exc:
                raise ModuleError(f"{self.path}: {exc}") from None
        if self.stdin:
            worker.send_bytes(self.stdin, deadline, stall)

    def close(self) -> None:
        """Close the module file. Safe twice."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _StopWorker:
    """What a run's `CancelToken` calls to stop it (`stop_now`): SIGKILL to that run's
    worker only, without waiting (the token's holder may be an event loop); the run's
    own thread sees the worker end and reaps it."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.fired = False

    def stop_now(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError):
            self.worker.proc.kill()  # Popen: never a pid it has reaped

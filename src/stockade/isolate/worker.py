"""The worker process: `python -m stockade.isolate.worker READ_FD WRITE_FD PARENT_PID TIE`.

It reads a `WorkerPlan`, hardens itself (`harden`), answers `ready` with the report of
its protections and the backend it runs, then serves requests until its parent closes
the pipe:

- `("run", module, invocation, env, cwd, stdin_size)` -> `started` (as the guest starts),
  then `result` (its stdout and stderr following as raw frames: `write_reply`),
  `error` (a Stockade error: bad module, bad policy) or `failed` (anything else), or,
  before `started`, `fallback`: this worker's backend (the plan's: the C API or
  wasmtime-py, `isolate.backend`) leaves the module to wasmtime-py's, the parent sends
  the run to a wasmtime-py worker;
  `module` is bytes or a `ModuleFile` read by the parent (the worker cannot open the
  caller's files); `resend` asks for a module file's bytes again when the worker no
  longer holds the one the parent left out; a non-zero `stdin_size` says the
  invocation's standard input follows (after the module's bytes) as one raw frame;
- `("vouch", digests)` -> no reply: the sha256 digests of more `.cwasm` files the parent
  checked under this host's key (`seal.vouch_for`), as the plan's `vouched`;
- `("check", name, arg)` -> `checked` (see `checks`);
- `("probe",)` -> `probed`: runs the plan's `probe` source, a test-only hook standing
  for code that took the worker over (a plan from `plan_for` has none);
- a run the remaining CPU budget cannot cover -> `retire` (the parent starts a new worker);
- with `plan.process_deadline` (an engine without epochs), a guest past its timeout ->
  `overran` with its result, and the worker ends itself (`overrun`).

RLIMIT_CPU is stepped like the parent's deadlines: a load allowance when a request
arrives, one run's worth when the guest starts (`Relay.run_started`).

An idle worker exits when its parent's end of the pipe closes. With TIE=1 (a parent
that started it from its main thread) it is also killed the moment the parent dies
(PR_SET_PDEATHSIG); the signal follows the *thread* that started the worker, so a
worker started from any other thread relies on the pipe alone.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import StockadeError
from ..invocation import MAX_STDIN
from .backend import open_backend
from .checks import run_check
from .harden import harden_after_engine, harden_before_engine
from .modules import FALLBACK, ModuleFile, ModuleMemo
from .overrun import Overrun  # imported before confinement, like everything a run uses
from .protocol import (
    bounded_message,
    error_to_wire,
    read_frame,
    read_raw_frame,
    write_frame,
    write_reply,
)
from .rlimits import cpu_room, cpu_used, step_cpu_limit, vm_size

if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..observe import RunInfo
    from ..policy import Policy
    from ..result import Result
    from .backend import WorkerBackend
    from .confine import Confinement
    from .plan import WorkerPlan

__all__ = ["main", "worker_main", "Relay"]

_PR_SET_PDEATHSIG = 1
_RECLAIM_BYTES = 256 * 1024**2
# The modules imported when the worker answered `ready`: whatever a run imports later
# must be reachable after confinement (test probes compare against it).
READY_MODULES: frozenset[str] = frozenset()


class Relay:
    """Observer of the worker's sandbox: tells the parent when the guest starts, so the
    parent's deadline counts from there (compiling is bounded separately), and arms the
    worker's own deadline (`overrun`, when its engine has no epochs) for `timeout`."""

    def __init__(self, fd: int, run_cpu: int | None, shown: dict[str, str],
                 overrun: Overrun | None = None, timeout: float | None = None) -> None:
        self.fd = fd
        self.run_cpu = run_cpu
        self.shown = shown
        self.overrun = overrun
        self.timeout = timeout

    def run_started(self, info: RunInfo) -> None:
        if self.run_cpu is not None:
            step_cpu_limit(self.run_cpu)  # loading is over: from here, one run's CPU time
        write_frame(self.fd, ("started", {
            "module": info.module, "sha256": info.sha256, "coldstart": info.coldstart,
            "started": info.started,
            "writable_dirs": [self.shown.get(str(p), str(p)) for p in info.writable_dirs],
        }))
        if self.overrun is not None and self.timeout is not None:
            self.overrun.arm(self.timeout)

    def run_finished(self, info: RunInfo, result: Result) -> None:
        """The result itself is the reply; nothing to send here."""


def _relocated(plan: WorkerPlan, confinement: Confinement) -> tuple[Policy, dict[str, str]]:
    """The policy with each granted directory where this worker reaches it, and the
    way back (worker path -> the caller's path) for what the parent is told."""
    dirs = []
    shown = {}
    for grant, (real, _) in zip(plan.policy.capabilities.dirs, plan.grants, strict=True):
        if real in confinement.paths:
            reached = confinement.paths[real]
            shown[str(reached)] = str(grant.host)
            grant = dataclasses.replace(grant, host=reached)
        dirs.append(grant)
    return plan.policy.with_capabilities(dirs=tuple(dirs)), shown


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _run(backend: WorkerBackend, modules: ModuleMemo,
         arguments: list[Any]) -> tuple[str, Any]:
    """Serve one run request: `arguments` is [module, invocation, env, cwd], emptied
    of the module as soon as it is loaded."""
    invocation: Invocation
    env: dict[str, str | None]
    cwd: str
    invocation, env, cwd = arguments[1:]
    # Relative module and directory paths mean what they mean in the parent, now.
    if cwd != os.getcwd():
        try:
            os.chdir(cwd)
        except OSError as exc:
            return "failed", {"message": f"cannot enter the caller's directory {cwd}: {exc}"}
    # The parent's values of the variables the policy passes through, as of this run.
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        loaded = modules.load(backend, arguments.pop(0))
        if loaded is None:
            return "resend", None
        if loaded is FALLBACK:
            return "fallback", None
        return "result", backend.run(loaded, invocation)
    except StockadeError as exc:
        return "error", error_to_wire(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, the worker goes on
        return "failed", {"message": bounded_message(f"{type(exc).__name__}: {exc}")}


def _with_stdin(request: tuple[Any, ...], read_fd: int) -> tuple[Any, ...]:
    """A run request whose standard input follows it as one raw frame of the announced
    size (`IsolatedSandbox._request`): the request as `_run` takes it, that input put
    back into its invocation (held once, never a copy)."""
    kind, module, invocation, env, cwd, size = request
    if size:
        stdin = read_raw_frame(read_fd, MAX_STDIN)
        invocation = dataclasses.replace(invocation, stdin=stdin)
    return kind, module, invocation, env, cwd


def _probe(source: str | None) -> Any:
    """Run the plan's test-only probe (its `result` variable is the reply)."""
    if source is None:
        return {"error": "this worker's plan has no probe"}
    scope: dict[str, Any] = {"__name__": "stockade_probe"}
    try:
        exec(compile(source, "<probe>", "exec"), scope)  # noqa: S102 - the parent's own code
    except Exception as exc:  # noqa: BLE001 - the probe's failure is its answer
        return {"error": f"{type(exc).__name__}: {exc}"}
    return scope.get("result")


def serve(read_fd: int, write_fd: int) -> None:
    """Harden this process by the plan read from `read_fd`, then answer requests."""
    plan: WorkerPlan = pickle.loads(read_frame(read_fd))
    # The AoT cache writes an audit record when it refuses an entry (one the parent
    # wrote under its own uid, say): imported now, while the standard library is
    # reachable. Appending fails afterwards (no state directory here) and is logged.
    import stockade.telemetry.audit  # noqa: F401

    # Everything the worker runs is imported (and libwasmtime mapped) while this process is
    # still the caller: once it has its own uid, a checkout or interpreter under a private
    # directory (/root, a 0700 temporary directory) is out of its reach. `harden` imports
    # the plan's backend (`isolate.backend.preload`).
    from ..engine.config import wasmtime_version
    from ..engine.seal import install_key, vouch

    wasmtime_version()  # stats the library file: part of every cache key
    confinement = harden_before_engine(plan)
    report = confinement.report

    if plan.aot_key is not None:  # the parent read it: this worker cannot reach the file
        install_key(plan.aot_key)
    vouch(plan.vouched)  # .cwasm files the parent checked under this host's key

    cache = None
    if plan.cache is not None:  # the AoT cache, where this worker reaches it
        cache = confinement.where(plan.cache)
        os.environ["STOCKADE_CACHE_DIR"] = str(cache)
    policy, shown = _relocated(plan, confinement)
    overrun = None
    if plan.process_deadline:  # no epochs in this engine: the deadline is this process's
        overrun = Overrun(write_fd, lambda wall, cpu: None)
    relay = Relay(write_fd, plan.rlimits.run_cpu, shown, overrun, policy.limits.timeout)
    backend = open_backend(plan.backend, policy, (relay,), cache,
                           process_deadline=plan.process_deadline)
    if overrun is not None:
        overrun.report = backend.overdue
    # The engine (and a C-API pool's memory) exists before RLIMIT_AS and seccomp.
    report += harden_after_engine(plan, backend.wasmtime_engine())
    modules = ModuleMemo()
    baseline = vm_size()
    global READY_MODULES
    READY_MODULES = frozenset(sys.modules)
    write_frame(write_fd, ("ready", {"pid": os.getpid(), "cpu_used": cpu_used(),
                                     "backend": backend.name,
                                     "protections": [tuple(p) for p in report]}))
    while True:
        try:
            request = pickle.loads(read_frame(read_fd))
        except EOFError:
            return
        kind = request[0]
        if kind == "run" and isinstance(request[1], ModuleFile) and request[1].attached:
            module = request[1]  # its bytes follow as one raw frame of the announced size
            request = (kind, dataclasses.replace(
                module, data=read_raw_frame(read_fd, module.size)), *request[2:])
        if kind == "run" and len(request) > 5:
            request = _with_stdin(request, read_fd)
        if kind == "run":
            cpu = plan.rlimits
            if cpu.run_cpu is not None:
                if not cpu_room(cpu.per_request_cpu()):
                    del request  # its stdin: held, the parent could not lower the limit
                    write_frame(write_fd, ("retire", {"cpu_used": cpu_used()}))
                    continue
                step_cpu_limit(cpu.load_cpu)
            arguments = list(request[1:])
            del request  # the module's bytes live only as long as loading needs them
            reply = _run(backend, modules, arguments)
            # The standard input goes before the reply: the parent then takes back the
            # memory it allowed for it (`WorkerProcess.allow_memory`), and replaces this
            # worker if it cannot (anything still holding the input keeps it charged).
            del arguments
            if overrun is not None:
                with overrun.lock:  # the run's one reply: this or the deadline's
                    overrun.disarm()
            # A trap's traceback keeps its Store, with a whole linear-memory reservation,
            # alive until the cycle collector runs; RLIMIT_AS has room for one at a time.
            if vm_size() > baseline + _RECLAIM_BYTES:
                gc.collect()
            write_reply(write_fd, *reply)
        elif kind == "vouch":  # more `.cwasm` files the parent checked; no reply
            digests = request[1]
            if isinstance(digests, frozenset) and all(isinstance(d, str) for d in digests):
                vouch(digests)
        elif kind == "check":
            write_frame(write_fd, ("checked", run_check(request[1], request[2])))
        elif kind == "probe":
            write_frame(write_fd, ("probed", _probe(plan.probe)))
        else:
            write_frame(write_fd, ("failed", {"message": f"unknown request {kind!r}"}))


def worker_main(serve_fds: Callable[[int, int], None], argv: list[str], program: str) -> int:
    """The entry point of a worker program started by a `WorkerProcess`: `argv` is
    READ_FD WRITE_FD PARENT_PID TIE; with TIE=1 the worker dies with its parent; then
    `serve_fds(read_fd, write_fd)` runs until the parent closes the pipe."""
    if len(argv) != 4:
        print(f"usage: python -m {program} READ_FD WRITE_FD PARENT_PID TIE", file=sys.stderr)
        return 2
    read_fd, write_fd, parent, tie = (int(arg) for arg in argv)
    if tie:
        _die_with_parent(parent)
    serve_fds(read_fd, write_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    return worker_main(serve, sys.argv[1:] if argv is None else argv,
                       "stockade.isolate.worker")


if __name__ == "__main__":
    sys.exit(main())

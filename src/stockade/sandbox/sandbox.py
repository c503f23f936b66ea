"""`Sandbox`: run one WebAssembly module under a `Policy`, in this process."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import wasmtime

from ..engine import CompileGuard, Engine, EngineConfig, LoadedModule, get_engine
from ..engine.engine import KEPT_MODULES
from ..engine.grow import EXPORT as GROW_EXPORT
from ..engine.grow import refused_bytes
from ..engine.loader import refuse_precompiled
from ..engine.traps import (
    EXITED_OK,
    Ending,
    classify,
    describe_load_error,
    fuel_consumed,
    memory_verdict,
    start_with_values,
)
from ..engine.trip import EXPORT as TRIPWIRE_EXPORT
from ..engine.trip import START as TRIPWIRE_START
from ..engine.trip import Tripwire, tripped, with_page
from ..errors import ModuleError, PrecompiledRefused, UntrustedModule, UsageError
from ..hostcalls import LINKER_NAME, Meter, build_linker, metered
from ..invocation import Invocation
from ..modulearg import module_argument
from ..observe import RunInfo, RunObserver, notify_finished, notify_started
from ..policy import DirGrant, Policy
from ..recent import Recent
from ..result import Outcome, Result, Usage, exit_status
from .arguments import invocation_argument, policy_argument
from .cancel import EpochDeadline, current_token, native_deadlines
from .imports import denied_import
from .methods import RunMethods
from .provenance import Gate, denied_result, gate
from .scratch import Scratch
from .wasi import checked_preopens, wasi_config

__all__ = ["Sandbox"]


class Sandbox(RunMethods):
    """Runs modules under one policy, each run in a fresh instance.

    ``Sandbox(policy).run(module, Invocation(...)) -> Result``. `module` is a path to a
    `.wasm`, `.wat` or `.cwasm` file, module bytes, or a `LoadedModule` from `load()`.
    A `.cwasm` is native code: it runs only with `allow_precompiled=True` (or the policy's
    `capabilities.allow_precompiled`) and a MAC this host's key verifies; otherwise `run`
    reports `denied` (exit 126) and `load` raises PrecompiledRefused.
    Limits hold against hostile guests: fuel, a deadline (a tripwire, epochs under a fuel
    budget) that also cuts sleeps in host calls, store limits for memory/tables/instances,
    a bounded wasm stack, and the output, disk, file, descriptor and host-call quotas of
    `stockade.hostcalls`.

    Raises ModuleNotFound or ModuleError when the module cannot be loaded; everything
    the guest does is reported in the `Result`. Closing is safe twice.
    """

    def __init__(self, policy: Policy | None = None, *,
                 observers: Sequence[RunObserver] = (),
                 engine_config: EngineConfig | None = None,
                 allow_precompiled: bool | None = None) -> None:
        self.policy = policy_argument(policy, "Sandbox")
        if allow_precompiled is not None:
            self.policy = self.policy.with_capabilities(allow_precompiled=allow_precompiled)
        self.observers = tuple(observers)
        # An explicit engine configuration is for measurements (e.g. no epochs): the
        # policy's limits then hold only as far as that configuration instruments code.
        # The deadline is a tripwire where one can serve (EngineConfig.for_limits):
        # epochs cost compute 1.3x native.
        limits = self.policy.limits
        self.engine_config = engine_config or EngineConfig.for_limits(limits)
        self._engine: Engine | None = None
        self._limits_dict = self.policy.limits.as_dict()
        self._guard = CompileGuard.for_limits(limits)
        # Import verdicts by module digest (`None`: none denied), the most recent kept.
        self._denied: Recent[str, tuple[str, str] | tuple[()]] = Recent(KEPT_MODULES)
        self._signed: set[str] = set()  # digests whose signatures this sandbox verified
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The (shared) engine for this policy's configuration."""
        if self._engine is None:
            self._engine = get_engine(self.engine_config)
        return self._engine

    def load(self, module: str | Path | bytes | LoadedModule,
             name: str | None = None) -> LoadedModule:
        """Compile (or fetch from the AoT cache) a module ahead of running it; `name`
        names module bytes in results and errors (default `<bytes>`). Raises
        ModuleNotFound, ModuleError or PrecompiledRefused."""
        module = self._checked(module)
        allowed = self.policy.capabilities.allow_precompiled
        if isinstance(module, LoadedModule):
            if module.precompiled and not allowed:
                raise refuse_precompiled(module.name, module.sha256)
            return module
        verdict = gate(module, self.policy, name)
        if verdict is not None:
            if verdict.data is None:
                raise UntrustedModule(f"{verdict.name}: signature {verdict.refusal}")
            self._signed.add(verdict.sha256)
            return self.engine.load(verdict.data, name=verdict.name, guard=self._guard,
                                    allow_precompiled=allowed)
        return self.engine.load(module, name=name, guard=self._guard, allow_precompiled=allowed)

    def run(self, module: str | Path | bytes | LoadedModule,
            invocation: Invocation | None = None) -> Result:
        """Run the module's `_start` once in a fresh instance and report what happened."""
        module = self._checked(module)
        invocation = invocation_argument(invocation, "Sandbox.run")
        try:
            if isinstance(module, LoadedModule):
                if self.policy.trust.require_signature and module.sha256 not in self._signed:
                    verdict = Gate(None, module.name, module.sha256,
                                   "refused: not verified by this sandbox (pass its path or "
                                   "bytes)")
                    return denied_result(verdict, self.policy, invocation, self.observers)
                loaded = self.load(module)
            else:
                checked = gate(module, self.policy)
                if checked is not None and checked.data is None:
                    return denied_result(checked, self.policy, invocation, self.observers)
                if checked is not None and checked.data is not None:
                    self._signed.add(checked.sha256)
                    loaded = self.engine.load(
                        checked.data, name=checked.name, guard=self._guard,
                        allow_precompiled=self.policy.capabilities.allow_precompiled)
                else:
                    loaded = self.load(module)
        except PrecompiledRefused as exc:
            return self._refused(module, invocation, exc)
        engine = self.engine.for_module(loaded)
        coldstart = not engine.is_warm(loaded, LINKER_NAME)
        info = RunInfo(
            module=loaded.name, sha256=loaded.sha256, invocation=invocation, policy=self.policy,
            started=time.time(), pid=os.getpid(), coldstart=coldstart,
            writable_dirs=tuple(g.shown for g in self.policy.capabilities.dirs if g.writable),
        )
        denied = self._denied.get(loaded.sha256)
        if denied is None:
            denied = self._denied.put(loaded.sha256, denied_import(loaded.module) or ())
        if denied:
            name, reason = denied
            result = self._result(loaded, Ending(Outcome.DENIED, f"import {name} denied: {reason}"),
                                  None, Usage(), coldstart)
            notify_finished(self.observers, info, result)
            return result
        # Before instantiating: a start section would run first, with every grant.
        start_type = next((item.type for item in loaded.module.exports
                           if item.name == "_start"), None)
        if isinstance(start_type, wasmtime.FuncType) and (start_type.params
                                                          or start_type.results):
            raise start_with_values(loaded.name)
        engine.linker(LINKER_NAME, build_linker)
        try:
            pre = engine.instance_pre(loaded, LINKER_NAME)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"{loaded.name}: cannot link: {describe_load_error(exc)}") from None
        # The granted directories are held from their check to the run's end.
        with checked_preopens(self.policy) as held, Scratch(self.policy.capabilities) as scratch:
            preopens, grants = list(held), self.policy.capabilities.dirs
            if scratch.grant is not None:
                preopens, grants = [*preopens, (scratch.grant.host, True)], (*grants, scratch.grant)
                info.writable_dirs += (scratch.grant.host,)
            notify_started(self.observers, info)
            # The timeout is the guest's: it starts now, not before a first compile (which
            # the compile guard bounds) could eat it.
            result = self._execute(engine, loaded, pre, invocation, preopens, grants,
                                   time.monotonic(), coldstart)
        result.scratch, result.cleanup_error = scratch.kept, scratch.failure
        notify_finished(self.observers, info, result)
        return result

    def _execute(self, engine: Engine, loaded: LoadedModule, pre: wasmtime.InstancePre,
                 invocation: Invocation, preopens: list[tuple[Path, bool]],
                 grants: tuple[DirGrant, ...], started: float, coldstart: bool) -> Result:
        limits = self.policy.limits
        store = wasmtime.Store(engine.wasmtime)
        # One extra instance for the forwarding trampoline of stockade.hostcalls, one
        # extra memory for a tripwire's page.
        cap = limits.memory_cap(self.engine_config.gc)
        store.set_limits(memory_size=cap,
                         table_elements=limits.max_table_elements,
                         instances=limits.max_instances + 1, tables=limits.max_tables,
                         memories=with_page(limits.max_memories, loaded.tripwire))
        if limits.fuel is not None and self.engine_config.fuel:
            store.set_fuel(limits.fuel)
        store.set_wasi(wasi_config(invocation, self.policy, loaded.name, preopens, grants))
        deadline = None if limits.timeout is None else started + limits.timeout
        meter = Meter(limits, deadline, preopens, invocation.stdin)
        instance: wasmtime.Instance | None = None
        in_host_call = False
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        token = current_token()
        trip = Tripwire() if loaded.tripwire else None
        epoch: EpochDeadline | None = None
        # The native library keeps a tripwire's deadline (`Tripwire.due`) and an epochs
        # run's (`EpochDeadline`); the ticker only when it is not built.
        ticked = trip is None and not (engine.config.epochs and native_deadlines())
        interrupt = metered(meter, engine.wasmtime)
        with engine.ticker.deadline(remaining if ticked else None) as ticks, interrupt:
            try:
                # Inside the `try`: whatever raises after a deadline is listed, the
                # `finally` takes it off before its memory goes.
                if engine.config.epochs:  # decided by the clock, whoever moves the epoch
                    epoch = EpochDeadline(deadline, ticks, token)
                    epoch.install(store, engine.wasmtime, meter)
                elif trip is not None and token is not None:
                    token.arm_tripwire(trip, meter)
                elif token is not None:  # no deadline in generated code: host calls only
                    token.attach(None, meter, None)
                if trip is not None and deadline is not None:
                    trip.due(deadline)
                instance = pre.instantiate(store)
                exports = instance.exports(store)
                if trip is not None:
                    _arm(trip, exports, store, loaded.name)
                start = exports.get("_start")
                if not isinstance(start, wasmtime.Func):
                    raise ModuleError(f"{loaded.name}: no _start export (not a WASI command)")
                start(store)
                ending = EXITED_OK
            except ModuleError:
                raise
            except (wasmtime.WasmtimeError, wasmtime.Trap, Exception) as exc:  # noqa: B014
                in_host_call = meter.failure is not None  # a host call stopped the guest
                failure, meter.failure = meter.failure or exc, None
                # The traceback's frames hold this Store (a ~4 GiB reservation) in a cycle
                # only the garbage collector would break: cut it now.
                for cut in (exc, failure):
                    cut.__traceback__ = None
                    cut.__context__ = None
                # Raises KeyboardInterrupt again (Ctrl-C in a host call): once the
                # guest's deadline and token are off it, below.
                ending = classify(failure, started=instance is not None, max_memory=cap)
            finally:
                if epoch is not None:  # its deadline moves the epoch no more
                    epoch.close()
                if trip is not None:  # no deadline fires it, then its page is given back
                    trip.undue()  # before the store (and the page) can go
                    trip.disarm()
                if token is not None:
                    token.disarm()
        meter.failure = None  # its traceback holds the store, like the exception above
        if interrupt.interrupted:  # Ctrl-C where it could not stop the guest at once
            raise KeyboardInterrupt
        ending = tripped(ending, trip)
        watcher = epoch if epoch is not None else token
        stopped = watcher.ending(ending.outcome) if watcher is not None else None
        if stopped is not None:
            ending = stopped
        usage = Usage(
            wall_ms=(time.perf_counter() - wall0) * 1000,
            cpu_ms=(time.thread_time() - cpu0) * 1000,
            fuel_consumed=fuel_consumed(
                limits.fuel if self.engine_config.fuel else None, _fuel_left(store), ending,
                in_host_call),
            peak_memory_bytes=_memory_size(instance, store),
            files_created=meter.files_created,
            bytes_written=meter.bytes_written,
            hostcalls=dict(meter.counts),
        )
        ending = memory_verdict(ending, usage.peak_memory_bytes, cap,
                                _refused(instance, store))
        return self._result(loaded, ending, meter, usage, coldstart)

    def _refused(self, module: str | Path | bytes | LoadedModule, invocation: Invocation,
                 exc: PrecompiledRefused) -> Result:
        """A `denied` result for native code this sandbox will not run (recorded)."""
        name = module.name if isinstance(module, LoadedModule) else \
            "<bytes>" if isinstance(module, bytes) else Path(module).name
        info = RunInfo(module=name, sha256=exc.sha256, invocation=invocation,
                       policy=self.policy, started=time.time(), pid=os.getpid(),
                       coldstart=True)
        result = Result(module=name, sha256=exc.sha256, outcome=Outcome.DENIED,
                        exit_code=Outcome.DENIED.exit_code, message=exc.message,
                        limits=dict(self._limits_dict), coldstart=True)
        notify_finished(self.observers, info, result)
        return result

    def _result(self, loaded: LoadedModule, ending: Ending, meter: Meter | None, usage: Usage,
                coldstart: bool) -> Result:
        exit_code = exit_status(ending.guest_exit_code or 0) \
            if ending.outcome is Outcome.EXITED else ending.outcome.exit_code
        return Result(
            module=loaded.name, sha256=loaded.sha256, outcome=ending.outcome, exit_code=exit_code,
            guest_exit_code=ending.guest_exit_code, message=ending.message,
            stdout=bytes(meter.stdout) if meter else b"",
            stderr=bytes(meter.stderr) if meter else b"",
            stdout_truncated=meter.stdout_truncated if meter else False,
            stderr_truncated=meter.stderr_truncated if meter else False,
            usage=usage, limits=dict(self._limits_dict), coldstart=coldstart,
        )

    def _checked(self, module: object) -> str | Path | bytes | LoadedModule:
        """`module` as `load` and `run` take it; UsageError for anything else, a path
        with a NUL character, or a closed sandbox (it ran on, as the others do not)."""
        if self._closed:
            raise UsageError("this Sandbox is closed")
        return module_argument(module, "Sandbox", LoadedModule)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Release this sandbox (engines are shared per process and stay); later runs
        raise UsageError. Safe twice."""
        self._engine = None
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether `close` was called (runs then raise UsageError)."""
        return self._closed

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _arm(trip: Tripwire, exports: Mapping[str, object], store: wasmtime.Store,
         name: str) -> None:
    """Arms `trip` with this instance's page, then runs the module's start function (the
    rewriting moved it out of instantiation, see `engine.tripwire`)."""
    page = exports.get(TRIPWIRE_EXPORT)
    if not isinstance(page, wasmtime.Memory):  # compiled with a tripwire, so never
        raise ModuleError(f"{name}: its tripwire is missing; refusing to run it")
    trip.arm(ctypes.cast(page.data_ptr(store), ctypes.c_void_p).value or 0)
    start = exports.get(TRIPWIRE_START)
    if isinstance(start, wasmtime.Func):
        start(store)


def _fuel_left(store: wasmtime.Store) -> int:
    try:
        left: int = store.get_fuel()
        return left
    except wasmtime.WasmtimeError:
        return 0


def _refused(instance: wasmtime.Instance | None, store: wasmtime.Store) -> int:
    """Bytes the largest `memory.grow` the limit refused asked for (`engine.grow`); 0
    for none, or a module whose grows are not watched."""
    if instance is None:
        return 0
    grown = instance.exports(store).get(GROW_EXPORT)
    if isinstance(grown, wasmtime.Global):
        value = grown.value(store)  # an i64 the rewriting added (compiling refuses others)
        if isinstance(value, int):
            return refused_bytes(value)
    return 0


def _memory_size(instance: wasmtime.Instance | None, store: wasmtime.Store) -> int:
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    if isinstance(memory, wasmtime.Memory):
        size: int = memory.data_len(store)
        return size
    return 0

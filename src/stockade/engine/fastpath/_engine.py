"""`FastEngine`: a pooling-allocator engine driven through wasmtime's C API.

The engine owns the wasmtime engine, a linker with WASI preview 1, the epoch ticker,
the output slots and admission: at most `max_instances` runs at once (the pool's size),
further callers wait. Runs on different threads proceed in parallel (each C call
releases the GIL); each uses its own store.
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import resource
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ...addrspace import vm_size
from ...cancel import CancelToken, current_token
from ...envblock import Env, EnvBlock, encode_args, encode_env
from ...errors import ModuleError, ModuleNotFound, UsageError
from ...policy.units import format_size
from ..config import MEMORY_GUARD, MEMORY_RESERVATION, EngineConfig
from ..ticker import NO_DEADLINE, TICK_SECONDS, EpochTicker
from ..traps import invalid_module
from ..trip import with_page
from ._capi import C, FastPathUnavailable, take_error
from ._exit import define_exit
from ._module import FastModule, prepare, raise_load
from ._native import RunState
from ._poll import define_owned_calls
from ._run import (
    NO_STORE_LIMITS,
    FastResult,
    RunPlan,
    RunSlot,
    StoreLimits,
    execute,
    native_plan,
    overdue,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ...hostcalls.meter import Meter
    from ...hostcalls.poll import Stoppable
    from ..guard import CompileGuard
    from ._metered import MeteredLinking

__all__ = ["FastEngine", "encode_env"]

_MAX_FUEL = (1 << 64) - 1
# Tables an instance may define in a pool: most modules define one; a slot costs address
# space only (table_elements x 8 bytes), mapped when a table uses it.
POOL_TABLES = 16
_POOL_TABLE_ELEMENTS = 1 << 35  # every table slot of a pool: 256 GiB of address space
_PLANS_KEPT = 16  # checked plans each module keeps for `run`
_UNTICKED = object()  # a run whose deadline the ticker does not keep (a tripwire's)


class FastEngine:
    """A wasmtime engine with the pooling allocator, for one fresh instance per call.

    `config` sets fuel metering, the deadline (epoch interruption, or a tripwire: modules
    compiled here are rewritten, `engine.trip`; one of them, or a `process_deadline`, is
    required for timeouts), the wasm stack and code generator, exactly as the standard
    engine does, so `.cwasm` files are interchangeable with it. `max_instances` bounds
    concurrent runs (the pool's slots); `max_memory` is the largest linear memory any run
    may get (bytes); `max_tables` the tables one instance may define (a policy's count: the
    pool holds at most `POOL_TABLES`, and refuses a module defining more at load), each of
    up to `table_elements`; `keep_resident` bytes of each freed memory are zeroed in place rather
    than returned to the kernel (faster for small guests). Raises FastPathUnavailable off
    Linux.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        max_instances: int = 64,
        max_memory: int = 128 * 1024**2,
        table_elements: int = 100_000,
        max_tables: int = 1,
        keep_resident: int = 1024**2,
        tick_interval: float = TICK_SECONDS,
    ) -> None:
        if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
            raise FastPathUnavailable("the fast path needs Linux with /proc mounted")
        # wasmtime aborts the process (a panic in the C API) on a pool it cannot build:
        # memories above the 4 GiB reservation, or far too many slots to map.
        for key, value, top in (("max_instances", max_instances, 1_000),
                                ("max_memory", max_memory, 4 * 1024**3),
                                ("table_elements", table_elements, 10_000_000),
                                ("keep_resident", keep_resident, 1 << 30)):
            if not 0 < value <= top and not (key == "keep_resident" and value == 0):
                raise UsageError(f"FastEngine {key}={value} is out of range (1..{top})")
        if not 0 < tick_interval <= 1:
            raise UsageError(f"FastEngine tick_interval={tick_interval} must be in (0, 1] s")
        self.config = config or EngineConfig()
        self.max_instances = max_instances
        self.max_memory = max_memory
        self.max_tables = max(1, min(max_tables, POOL_TABLES))
        if max_instances * self.max_tables * table_elements > _POOL_TABLE_ELEMENTS:
            raise UsageError(f"FastEngine: {max_instances} instances of {self.max_tables} "
                             f"tables of {table_elements} elements are more than the pool "
                             f"maps ({_POOL_TABLE_ELEMENTS} elements in all)")
        _check_address_space(self._pool_memories())
        self._engine = C.wasm_engine_new_with_config(self._wasm_config(keep_resident,
                                                                       table_elements))
        self._linker = C.linker_new(self._engine)
        raise_load(C.linker_define_wasi(self._linker), "WASI")
        # Owned (counted, capped as they are written) when the native library is loaded.
        self.owns_stdio = define_owned_calls(self._linker)
        define_exit(self._linker)
        self._metered: MeteredLinking | None = None  # made by the first metered run
        self.tick_interval = tick_interval
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # a run finished
        # The engine's epoch (the sandbox's ticker); while runs are registered it also
        # seals output past its cap every tick, unless the owned standard streams stop
        # output at the cap as they write it.
        engine = self._engine
        self._ticker = EpochTicker(lambda: C.engine_increment_epoch(engine), tick_interval,
                                   watch=None if self.owns_stdio else self._seal_over)
        self._running: set[RunSlot] = set()
        self._free: list[RunSlot] = []
        self._modules: set[FastModule] = set()
        self._active = 0
        self._waiters = 0
        self._queue: collections.deque[object] = collections.deque()  # callers waiting
        self._closed = False
        self._forked = False
        _ENGINES.add(self)

    def _wasm_config(self, keep_resident: int, table_elements: int) -> int:
        """A `wasm_config_t*` for this engine (ownership passes to the engine)."""
        config = C.wasm_config_new()
        try:
            self._configure(config, keep_resident, table_elements)
        except BaseException:
            C.wasm_config_delete(config)
            raise
        return int(config)

    def _memories_per_module(self) -> int:
        return with_page(1, self.config.tripwire)

    def _pool_memories(self) -> int:
        # A module using GC types takes its GC heap from the memories too (a one-slot pool
        # refused every such module: "maximum concurrent limit of 1 for memory").
        return (self._memories_per_module() + 1) * self.max_instances

    def _configure(self, config: int, keep_resident: int, table_elements: int) -> None:
        _apply_settings(config, self.config)
        pool = C.pooling_allocation_config_new()
        # Twice the runs: a metered run adds its forwarding trampoline (no memory, no table).
        for setter, value in (("total_core_instances", 2 * self.max_instances),
                              ("total_memories", self._pool_memories()),
                              ("max_memories_per_module", self._memories_per_module()),
                              # A slot per table: a table is mapped only when used.
                              ("total_tables", self.max_instances * self.max_tables),
                              ("max_tables_per_module", self.max_tables),
                              # Fiber stacks serve async calls, which no run makes; the
                              # default 1,000 cost a guard-page mprotect each at start-up
                              # (~1,000 system calls and mappings, several ms per engine).
                              ("total_stacks", self.max_instances),
                              ("max_memory_size", self.max_memory),
                              ("table_elements", table_elements),
                              ("linear_memory_keep_resident", keep_resident),
                              ("table_keep_resident", keep_resident)):
            getattr(C, f"pooling_allocation_config_{setter}_set")(pool, value)
        C.pooling_allocation_strategy_set(config, pool)
        C.pooling_allocation_config_delete(pool)

    # -- loading ---------------------------------------------------------------------

    def compile(self, wasm: bytes | bytearray, name: str = "<bytes>",
                guard: CompileGuard | None = None) -> FastModule:
        """Compile WebAssembly binary bytes, first checked by `guard` when given, in a
        child under the guard's budgets (`engine.compiler`); on a tripwire engine, the
        bytes rewritten with their tripwire (`engine.tripwire`).
        Raises ModuleError, DeniedImport, or tripwire.Unsupported for a module the
        rewriting cannot serve (it needs an engine with epochs)."""
        wasm = bytes(wasm)
        if not wasm.startswith(b"\0asm"):
            raise ModuleError(f"{name}: not a WebAssembly binary (no \\0asm header)")
        from ..compiler import checked_code, compile_in_child, compiles_in_child

        if compiles_in_child():
            return self.deserialize(compile_in_child(self.config.settings(), wasm, name,
                                                     guard, self.config.tripwire), name)
        wasm = checked_code(wasm, name, guard, self.config.tripwire,
                            lambda code: self.validate(code, name))
        return self._load(lambda out: C.module_new(self._engine, wasm, len(wasm), out), name)

    def validate(self, wasm: bytes, name: str = "<bytes>") -> None:
        """Check that `wasm` is a module this engine accepts, without compiling it.
        Raises ModuleError saying why not."""
        error = C.module_validate(self._engine, wasm, len(wasm))
        if error:
            message, _ = take_error(error)
            raise invalid_module(name, message, needs_gc(wasm, self.config))

    def deserialize(self, cwasm: bytes | bytearray, name: str = "<bytes>") -> FastModule:
        """Load a `.cwasm` made by a compatible engine (same fuel/epoch settings and
        wasmtime version). Only for trusted files (the AoT cache, whose entries for a
        tripwire engine are keyed by its own fingerprint). On a tripwire engine the code
        must be the rewriting's: the run only checks that the page is exported, and code
        compiled without the rewriting (by an engine without any deadline, whose settings
        are the same) that exports a memory of that name would run without a deadline.
        Raises ModuleError."""
        cwasm = bytes(cwasm)
        return self._load(
            lambda out: C.module_deserialize(self._engine, cwasm, len(cwasm), out), name
        )

    def deserialize_file(self, path: str | Path, name: str | None = None) -> FastModule:
        """Like `deserialize`, mapping the file instead of reading it; `name` is the
        module's (default: the file's; an AoT cache entry's is a digest, or a descriptor's
        number under /proc). Raises ModuleNotFound, ModuleError."""
        path = Path(path)
        if not path.is_file():
            raise ModuleNotFound(f"{path}: no such module file")
        encoded = os.fsencode(path)
        try:
            return self._load(lambda out: C.module_deserialize_file(self._engine, encoded, out),
                              path.name if name is None else name)
        except ModuleError as exc:  # wasmtime names the file mapped: a cache entry's is ours
            context = f"failed deserialization for: {path}; "
            if type(exc) is not ModuleError or context not in exc.message:
                raise
            raise ModuleError(exc.message.replace(context, "")) from None

    def _load(self, make: Callable[[Any], int | None], name: str) -> FastModule:
        if self._closed:
            raise UsageError("FastEngine is closed")
        module, pre = prepare(self._linker, make, name)
        loaded = FastModule(self, module, pre, name)
        with self._cond:
            self._modules.add(loaded)
        return loaded

    # -- running ---------------------------------------------------------------------

    def run(
        self,
        module: FastModule,
        args: Iterable[str] = (),
        env: Env = (),
        stdin: bytes = b"",
        *,
        fuel: int | None = None,
        timeout_s: float | None = None,
        max_memory: int | None = None,
        max_output: int | None = None,
        capture_stderr: bool = True,
        max_hostcalls: int | None = None,
    ) -> FastResult:
        """Run `module`'s `_start` in a fresh instance and return how it ended.

        `args` exclude argv[0] (the module's name); `stdin` is the whole input. Limits:
        `fuel` instructions (None: unlimited; requires a fuel engine), `timeout_s`
        seconds of wall time (the engine's tripwire or epochs; a guest sleeping in
        `poll_oneoff` is stopped at the deadline too), `max_memory` bytes of each
        memory (default and ceiling: the engine's; a `gc` engine's GC heap is capped at
        it too, apart: a policy's `Limits.memory_cap` is half its limit, so both fit),
        `max_output` bytes of stdout + stderr together (None: unlimited; enforced while
        the guest runs: a write gets at most the room left, a write into a full cap stops
        the guest), `max_hostcalls` calls of `fd_write`, `fd_read`, `fd_close`,
        `random_get` and `poll_oneoff` together (None: unlimited; needs `owns_stdio`,
        the native library). `capture_stderr=False` discards stderr, saving a file open
        per call. Waits while `max_instances` runs are in flight. Raises
        UsageError for bad arguments. `plan` and `run_plan` do the same in two steps,
        checking the arguments once for many runs; this method keeps the plans it
        checked on the module (the last 16 sets of arguments and limits), so repeated
        runs alike check theirs once too.
        """
        if not isinstance(stdin, bytes | bytearray | memoryview):
            raise UsageError(f"stdin must be bytes, not {type(stdin).__name__}")
        args = tuple(args)
        # The same arguments make the same plan: check them once (a plan is immutable).
        key: tuple[Any, ...] | None = (args, fuel, timeout_s, max_memory, max_output,
                                       capture_stderr, max_hostcalls)
        plans = module._plans
        try:
            plan = plans.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable argument: `plan` says what is wrong with it
            plan = key = None
        if plan is None:
            plan = self.plan(module, args, fuel=fuel, timeout_s=timeout_s,
                             max_memory=max_memory, max_output=max_output,
                             capture_stderr=capture_stderr, max_hostcalls=max_hostcalls)
            if key is not None:
                if len(plans) >= _PLANS_KEPT:
                    plans.clear()
                plans[key] = plan
        return self.run_plan(plan, encode_env(env), bytes(stdin))

    def plan(
        self,
        module: FastModule,
        args: Iterable[str] = (),
        *,
        fuel: int | None = None,
        timeout_s: float | None = None,
        max_memory: int | None = None,
        max_output: int | None = None,
        capture_stderr: bool = True,
        max_hostcalls: int | None = None,
        program: str | None = None,
        store_limits: StoreLimits = NO_STORE_LIMITS,
    ) -> RunPlan:
        """Check a run's arguments and limits once (see `run`) for `run_plan`; `program`
        is argv[0] (default: the module's name); `store_limits` the guest's table
        elements, instances, tables and memories (a policy's `Limits.store_limits`; -1:
        only the pool's slot bounds it). Raises UsageError."""
        argv = encode_args(module.name if program is None else program, args)
        budget = self._fuel(fuel)
        memory = self.max_memory if max_memory is None else max_memory
        if not 0 < memory <= self.max_memory:
            raise UsageError(f"max_memory={memory} must be within 1..{self.max_memory} bytes "
                             "(the engine's pool slot size)")
        if max_output is not None and max_output < 0:
            raise UsageError(f"max_output={max_output} must not be negative")
        if max_hostcalls is not None and (max_hostcalls < 0 or not self.owns_stdio):
            raise UsageError(f"max_hostcalls={max_hostcalls} needs a non-negative count and "
                             "the fast path's native library (scripts/build_native.py)")
        if timeout_s is not None:
            self._check_timeout(timeout_s)
        if len(store_limits) != 4 or any(type(limit) is not int or not -1 <= limit < 2**63
                                         for limit in store_limits):
            raise UsageError(f"store_limits={store_limits!r} must be four whole numbers "
                             "of at least -1 (none)")
        block = b"".join(arg + b"\0" for arg in argv)
        tripwire = self.config.tripwire
        elements, instances, tables, memories = store_limits
        limits = (elements, instances, tables, with_page(memories, tripwire))
        native = native_plan(module._pre, block, len(argv), budget, memory, max_output,
                             capture_stderr, max_hostcalls, self.owns_stdio, tripwire, limits)
        return RunPlan(module, block, len(argv), budget, timeout_s, memory, max_output,
                       capture_stderr, max_hostcalls, self.owns_stdio, tripwire, limits,
                       native, ctypes.addressof(native))

    def run_plan(self, plan: RunPlan, env: EnvBlock, stdin: bytes = b"") -> FastResult:
        """Run a checked plan with `env` (`encode_env`) and `stdin` (bytes): `run` without
        checking its arguments again. Waits while `max_instances` runs are in flight.
        Raises UsageError for a plan whose deadline or streams are not this engine's
        (a copy with `tripwire` off would run a tripwire engine's guest with no deadline)."""
        if plan.tripwire != self.config.tripwire or plan.owned_stdio != self.owns_stdio:
            raise UsageError(f"{plan.module.name}: the plan's deadline or streams are another "
                             "engine's (make plans with this engine's `plan`)")
        slot = self._admit(plan.module)
        timeout_s = plan.timeout_s
        try:
            entry, ticks = self._register_deadline(slot, timeout_s)
            token = None
            try:
                deadline = slot.deadline = None if timeout_s is None \
                    else time.monotonic() + timeout_s
                token = self._cancellable(slot, slot)
                result = execute(self._engine, plan, slot, env, stdin,
                                 NO_DEADLINE if ticks is None else ticks)
            finally:
                self._unregister_deadline(entry)
                if token is not None:
                    token.disarm()  # no cancellation reaches the slot after this
        finally:
            self._release(plan.module, slot)
        return result if token is None else _as_cancelled(result, token, deadline)

    def run_metered(
        self,
        module: FastModule,
        meter: Meter,
        args: Iterable[str] = (),
        env: Env | EnvBlock = (),
        *,
        dirs: Sequence[str] = (),
        program: str | None = None,
    ) -> FastResult:
        """Run `module`'s `_start` in a fresh instance under `meter`, as the sandbox runs
        it: the same owned host calls (`hostcalls.handlers`) with the same outcomes and
        errnos, on this engine.

        The meter (`Meter(limits, deadline, preopens, stdin)`, made just before the
        call) decides everything the sandbox's would: the preopens (`meter.preopens`;
        `dirs` are their guest paths, in order; read-only unless writable), the disk,
        file and descriptor quotas, the output cap, the host-call budget and per-call
        caps, the deadline (monotonic seconds, also in blocking calls), the standard
        input and output. From `meter.limits` too: the fuel budget (when this engine
        meters fuel; a budget on an engine without fuel is a UsageError), linear memory
        (at most the engine's `max_memory`), tables and instances. The meter is closed
        when the run ends; read its counts after (the result also carries them). `env`
        is pairs or an `EnvBlock` already encoded; `program` is argv[0] (default: the
        module's name). Raises UsageError for bad arguments or limits this engine
        cannot hold.
        """
        from ._metered import MeteredLinking, MeteredRun

        limits = meter.limits
        remaining = None if meter.deadline is None else meter.deadline - time.monotonic()
        try:
            if limits.fuel is not None and not self.config.fuel:
                # Dropping the budget would run a strict policy without one, silently.
                raise UsageError(f"the policy's fuel budget ({limits.fuel}) needs an engine "
                                 "that meters fuel (EngineConfig.for_limits)")
            plan = self.plan(module, args, program=program,
                             fuel=limits.fuel if self.config.fuel else None,
                             max_memory=limits.memory_cap(self.config.gc),
                             timeout_s=None if remaining is None else max(remaining, 1e-6))
            block = env if isinstance(env, EnvBlock) else encode_env(env)
            with self._lock:
                if self._metered is None and not self._closed:
                    self._metered = MeteredLinking(self._engine)
            slot = self._admit(module)
            try:
                linking = self._metered
                if linking is None:
                    raise UsageError(f"{module.name}: engine or module is closed")
                slot.metered = MeteredRun(meter, dirs, linking.pre(module), linking)
                entry, ticks = self._register_deadline(slot, plan.timeout_s)
                token = None
                try:
                    deadline = slot.deadline = None if plan.timeout_s is None \
                        else time.monotonic() + plan.timeout_s
                    token = self._cancellable(slot, meter)
                    result = execute(self._engine, plan, slot, block, b"",
                                     NO_DEADLINE if ticks is None else ticks)
                finally:
                    self._unregister_deadline(entry)
                    if token is not None:
                        token.disarm()
            finally:
                slot.metered = None
                self._release(module, slot)
        finally:
            meter.close()
        return _charged(result if token is None else _as_cancelled(result, token, deadline),
                        meter)

    def _register_deadline(self, slot: RunSlot, timeout_s: float | None
                           ) -> tuple[Any, int | None]:
        """Register a run's deadline with the ticker (`EpochTicker.register`): (its
        entry, the epoch deadline in ticks). With the native library the run itself has
        the library's thread stop it at `slot.deadline` instead: it trips a tripwire
        (`Tripwire.due`; only reset here, before a cancellation may fire it) or moves
        the epoch for the run's watch (`stockade_watch_start`)."""
        trip = slot.trip if self.config.tripwire else None
        if trip is not None:
            trip.reset()
            return _UNTICKED, None
        if slot.watch is not None:
            return _UNTICKED, None
        return self._ticker.register(timeout_s)

    def _unregister_deadline(self, entry: Any) -> None:
        """The run of `entry` (from `_register_deadline`) ended."""
        if entry is not _UNTICKED:
            self._ticker.unregister(entry)

    def _cancellable(self, slot: RunSlot, sleeper: Stoppable) -> CancelToken | None:
        """Hand the run in `slot` to the token of this thread (`stockade.cancel`), if
        any: its cancellation fires the slot's tripwire (on an epochs engine, nothing
        reaches the guest's code) and stops `sleeper`'s host calls, whichever sleeps in
        them. Returns the token, to disarm when the run ends."""
        if slot.wake.is_set():  # a stop_now that came as an earlier run ended
            slot.wake.clear()
        token = current_token()
        if token is not None:
            trip = slot.trip if self.config.tripwire else None
            if trip is not None:
                token.arm_tripwire(trip, sleeper)
            else:
                token.attach(None, sleeper, None)
        return token

    def overdue(self, wall_s: float, cpu_s: float,
                memory_size: Callable[[int], int | None] | None = None) -> FastResult | None:
        """The result of the one run in progress as if its deadline stopped it now
        (`wall_s` and `cpu_s` it has used), or None when no run, or several, are in
        progress. For a process that stops a guest by ending itself
        (`EngineConfig.process_deadline`): called from another thread, it leaves the
        run's store alone; end the process after it. `memory_size` gives the size of the
        guest's memory at an address (`isolate.guestmem`, from the process's mappings);
        without it the size is 0, unknown."""
        with self._lock:
            running = [slot for slot in self._running if slot.plan is not None]
        if len(running) != 1:
            return None
        slot = running[0]
        plan = slot.plan
        if plan is None:  # it ended meanwhile
            return None
        metered = slot.metered
        result = overdue(plan, slot, wall_s, cpu_s, memory_size)
        return result if metered is None else _charged(result, metered.meter)

    def _fuel(self, fuel: int | None) -> int | None:
        if not self.config.fuel:
            if fuel is not None:
                raise UsageError("fuel was given but this engine does not meter fuel")
            return None
        if fuel is None:
            return _MAX_FUEL
        if not 0 <= fuel <= _MAX_FUEL:
            raise UsageError(f"fuel={fuel} must be within 0..2**64-1")
        return fuel

    def _check_timeout(self, timeout_s: float) -> None:
        config = self.config
        if not (config.epochs or config.process_deadline or config.tripwire):
            raise UsageError("a timeout needs an engine with epoch interruption or a tripwire")
        if not 0 < timeout_s < math.inf:
            raise UsageError(f"timeout_s={timeout_s} must be a positive number of seconds")

    def _admit(self, module: FastModule) -> RunSlot:
        # The bare lock (the one `_cond` wraps): a Condition's `with` is Python code.
        with self._lock:
            if self._active >= self.max_instances or self._queue:
                self._queue_for_slot()
            if self._forked:
                raise UsageError("this FastEngine was created before fork(): create one in "
                                 "each worker process")
            if self._closed or module._module is None:
                raise UsageError(f"{module.name}: engine or module is closed")
            if module.engine is not self:
                raise UsageError(f"{module.name}: module belongs to another FastEngine")
            self._active += 1
            module._active += 1
            slot = self._free.pop() if self._free else RunSlot(self._engine, self.config.epochs)
            self._running.add(slot)
            return slot

    def _release(self, module: FastModule, slot: RunSlot) -> None:
        with self._lock:
            self._running.discard(slot)
            slot.cap = slot.plan = None
            if self.config.process_deadline:  # `overdue` may read it before a run resets it
                _forget_run(slot.state)
            self._active -= 1
            module._active -= 1
            if slot.sealed or self._closed:
                slot.close()
            else:
                self._free.append(slot)
            if self._waiters:
                self._cond.notify_all()

    def _queue_for_slot(self) -> None:
        """Wait (the lock held) until a slot is free and every caller queued before this
        one has taken theirs: first come, first served. Woken callers used to race for a
        freed slot, which the caller that had just freed it could take again at once: one
        of six threads sharing three slots waited 15 s behind runs of 10 ms."""
        turn = object()
        self._queue.append(turn)
        try:
            while (self._active >= self.max_instances or self._queue[0] is not turn) \
                    and not self._closed:
                self._wait()
        finally:
            self._queue.remove(turn)
            if self._queue:  # the next in line may go now, if a slot is left
                self._cond.notify_all()

    def _wait(self) -> None:
        """Wait on the engine's condition (held) for a run to finish."""
        self._waiters += 1
        try:
            self._cond.wait()
        finally:
            self._waiters -= 1

    def _seal_over(self) -> None:
        """Seal the output of running guests past their cap (the ticker's thread). It
        never touches a store (stores are not thread-safe)."""
        with self._lock:
            for slot in self._running:
                slot.seal_if_over()

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Wait for in-flight runs, then stop the ticker and free every module, slot and
        the engine. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._forked:  # the parent's engine: nothing here to free or wait for
                return
            self._cond.notify_all()
            while self._active:
                self._wait()
            modules, slots, self._free = list(self._modules), self._free, []
        self._ticker.close()
        for module in modules:
            module.close()
        for slot in slots:
            slot.close()
        if self._metered is not None:
            self._metered.close()
        C.linker_delete(self._linker)
        C.wasm_engine_delete(self._engine)

    def __enter__(self) -> FastEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ENGINES: weakref.WeakSet[FastEngine] = weakref.WeakSet()


def _disown_after_fork() -> None:
    """A forked child shares the parent's memfds and lacks its ticker: refuse to run."""
    for engine in list(_ENGINES):
        engine._forked = True


os.register_at_fork(after_in_child=_disown_after_fork)


def _as_cancelled(result: FastResult, token: CancelToken,
                  deadline: float | None) -> FastResult:
    """`result` as the token reports a run it stopped (`error`, not a violation). A run
    that lasted to its own `deadline` (monotonic) timed out, cancelled or not: on an
    engine with epochs a cancellation wakes a sleep but does not reach a spinning guest."""
    if deadline is not None and time.monotonic() >= deadline:
        return result
    ending = token.ending(result.outcome)
    if ending is not None:
        result.outcome, result.message = ending.outcome, ending.message
        result.guest_exit_code = None
    return result


def _charged(result: FastResult, meter: Meter) -> FastResult:
    """`result` with what `meter` counted: files, bytes and host calls."""
    result.files_created, result.bytes_written = meter.files_created, meter.bytes_written
    result.hostcalls = dict(meter.counts)
    return result


def _forget_run(state: RunState) -> None:
    """Clear what a finished run left in `state` (its stop reason, output sizes, memory
    and call counts): the next run resets them only inside its C call, after `slot.plan`
    is set."""
    state.stop = state.out_size = state.err_size = state.out_spilled = state.err_spilled = 0
    state.memory_base = None
    ctypes.memset(state.calls, 0, ctypes.sizeof(state.calls))


def _check_address_space(memories: int) -> None:
    """Raise UsageError when the pool's `memories` slots cannot be mapped within this
    process's address-space limit (`ulimit -v`): wasmtime aborts the process on a pool
    it cannot map, with a Rust backtrace and nothing to catch."""
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return
    need = memories * (MEMORY_RESERVATION + 2 * MEMORY_GUARD)  # a guard on either side
    used = vm_size()
    if used + need > soft:
        raise UsageError(
            f"the fast path's memory pool reserves {format_size(need)} of address space "
            f"({memories} memories of {format_size(MEMORY_RESERVATION)}, reserved, not "
            f"used), more than this process's limit leaves ({format_size(max(0, soft - used))}"
            f" of `ulimit -v` {format_size(soft)}): raise or lift that limit")


def _apply_settings(config: int, engine: EngineConfig) -> None:
    """Set `engine`'s settings on a `wasm_config_t*`: the table `EngineConfig.to_wasmtime`
    reads too, so .cwasm files serve both paths."""
    for name, value in engine.settings():
        setter = getattr(C, f"config_{name}_set")
        error = setter(config, value.encode() if isinstance(value, str) else value)
        if error:
            raise FastPathUnavailable(f"{name}={value}: {take_error(error)[0]}")


def refusal(engine: EngineConfig, wasm: bytes) -> str | None:
    """wasmtime's validator's refusal of `wasm` under `engine`'s settings, or None when
    it accepts the module (a plain engine, made for the question: no pool, nothing
    compiled). The one validation outside a loading engine (`engine.validity`): through
    the C API, since a confined worker cannot import wasmtime-py once it runs."""
    if not isinstance(wasm, bytes):  # ctypes takes bytes only (bytes(8) is 8 zeros)
        wasm = memoryview(wasm).tobytes()
    config = C.wasm_config_new()
    try:
        _apply_settings(config, engine)
    except BaseException:
        C.wasm_config_delete(config)
        raise
    handle = C.wasm_engine_new_with_config(config)
    try:
        error = C.module_validate(handle, wasm, len(wasm))
        return take_error(error)[0] if error else None
    finally:
        C.wasm_engine_delete(handle)


def needs_gc(wasm: bytes, engine: EngineConfig | None = None) -> bool:
    """Whether `engine` (the default one when None) with Wasm GC and exception handling
    accepts `wasm` (asked of a module that engine refused: it refused for want of them).
    Asked of that engine's own strategy and features: the default's answer for a pulley
    engine's refusal named GC where the module needed another proposal."""
    return refusal((engine or EngineConfig()).with_gc(), wasm) is None

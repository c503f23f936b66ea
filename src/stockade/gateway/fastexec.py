"""`FastExecutor`: functions on the C-API fast path (`stockade.engine.fastpath`).

Every in-process function runs here. One that needs metered host calls (`needs_meter`:
granted directories or a scratch directory, and so disk, file and descriptor quotas;
per-call caps; a host-call budget the native library cannot count) is a
`MeteredFunction`, run by `FastEngine.run_metered` under a `Meter`, with the sandbox's
own host calls; the others are `FastFunction`s, run by a plan checked once.

One pooling-allocator `FastEngine` per engine configuration (fuel on or off, stack
size) and pool size (`POOL_MEMORY` and `_TABLE_ELEMENTS` slots, or larger ones for a
function whose limits are), sized for the worker's guest threads, so a run never waits
for a pool slot. Modules come from the same AoT cache as the standard engine: the
`.cwasm` the standard engine wrote is mapped in, not recompiled.

Inline first: handing a run to a guest thread and back costs more than a short guest
runs, so `try_inline` runs it on the calling (event loop) thread under a small budget,
`INLINE_FUEL` instructions and `INLINE_TIMEOUT` seconds. A run that outgrows the budget
is abandoned and run again on a guest thread with the function's full limits: on the
fast path a guest has no directories or sockets, so an abandoned run leaves no trace
outside its own instance. The function then skips the inline attempt for
`INLINE_BACKOFF` seconds, so a slow function stalls the loop at most twice per backoff
(a timeout with little CPU time, a sleeping guest or a worker descheduled on a busy
machine, counts only when it happens twice in a row). A metered function never runs
inline: an abandoned run may have written to its directories.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from ..engine import EngineConfig, LoadedModule, get_engine
from ..engine.fastpath import (
    COUNTED_CALLS,
    EnvBlock,
    FastEngine,
    FastModule,
    FastResult,
    encode_env,
)
from ..errors import ModuleError, UsageError
from ..hostcalls import Meter
from ..hostcalls.routing import meter_reason, owned_imports
from ..invocation import Invocation
from ..observe import RunObserver, notify_finished, notify_started
from ..result import Outcome, Result
from ..sandbox.scratch import Scratch
from ..sandbox.wasi import checked_preopens, guest_env
from .cgi import CgiEnvironment
from .manifest import FunctionSpec
from .prepared import Prepared

__all__ = ["FastExecutor", "FastFunction", "MeteredFunction", "needs_meter", "POOL_MEMORY",
           "INLINE_FUEL", "INLINE_TIMEOUT", "INLINE_BACKOFF"]

# Linear memory per pool slot: the largest memory a fast-path function may have.
# The pool reserves address space (not memory) for threads x this.
POOL_MEMORY = 256 * 1024**2
_TABLE_ELEMENTS = 100_000
INLINE_FUEL = 2_000_000  # instructions: well under a millisecond of compute
INLINE_TIMEOUT = 0.005  # seconds: bounds host-call time, which fuel does not count
INLINE_BACKOFF = 5.0  # seconds without inline attempts after one outgrew its budget


def needs_meter(spec: FunctionSpec, loaded: LoadedModule) -> str | None:
    """Why the function's runs need a `Meter` (`FastEngine.run_metered`), or None
    (`hostcalls.routing.meter_reason`, the one place this is decided)."""
    owned = owned_imports((item.module or "", item.name or "")
                          for item in loaded.module.imports)
    return meter_reason(spec.policy, owned, COUNTED_CALLS)


class _FastBase(Prepared):
    """What both fast-path functions share: the module, its engine, the guest's
    environment (a request's CGI block as bytes) and the limits as results carry them."""

    def __init__(self, spec: FunctionSpec, module: FastModule, sha256: str,
                 observers: Sequence[RunObserver]) -> None:
        super().__init__(spec, sha256, observers)
        self._module = module
        self._engine = module.engine
        self._limits = spec.policy.limits.as_dict()
        # Host variables are read once: a worker's environment does not change.
        self._base_env = tuple(guest_env(spec.policy, Invocation()))
        self.cgi = CgiEnvironment(spec.route, self._base_env, spec.headers)

    def _env(self, invocation: Invocation) -> EnvBlock:
        """The guest's environment: a request's CGI block as the gateway built it (host
        variables included), or the host variables under an invocation's own."""
        block: EnvBlock | None = getattr(invocation, "env_block", None)
        if block is not None:
            return block
        return encode_env({**dict(self._base_env), **dict(invocation.env)})


class FastFunction(_FastBase):
    """A function run through a `FastEngine` by a plan, limits taken from its policy."""

    kind = "fast"
    inlines = True

    def __init__(self, spec: FunctionSpec, module: FastModule, sha256: str,
                 observers: Sequence[RunObserver]) -> None:
        super().__init__(spec, module, sha256, observers)
        limits = spec.policy.limits
        self._fuel = limits.fuel
        self._timeout = limits.timeout
        # Arguments and limits are checked once, here, not per request.
        inline_fuel = None if limits.fuel is None else min(limits.fuel, INLINE_FUEL)
        inline_timeout = INLINE_TIMEOUT if limits.timeout is None \
            else min(limits.timeout, INLINE_TIMEOUT)
        # The two plans differ in their fuel and deadline only. The store's limits are
        # the function's: the pool's slots are shared and may be larger.
        plan = functools.partial(
            self._engine.plan, module, spec.args,
            max_memory=limits.memory_cap(self._engine.config.gc), max_output=limits.max_output,
            capture_stderr=spec.capture_stderr, max_hostcalls=limits.max_hostcalls,
            program=self.module_name, store_limits=limits.store_limits)
        self._plan = plan(fuel=limits.fuel, timeout_s=limits.timeout)
        self._inline_plan = plan(fuel=inline_fuel, timeout_s=inline_timeout)
        self._inline_after = 0.0
        self._inline_strikes = 0

    def run(self, invocation: Invocation) -> Result:
        """Run once in a fresh instance with the function's limits (a guest thread)."""
        result, _ = self._run(invocation, inline=False)
        if result is None:  # only inline runs are abandoned
            raise RuntimeError("a full run cannot be abandoned")
        return result

    def _outgrew_inline(self, fast: FastResult) -> bool:
        """Whether the function itself outgrew the inline budget: it ran out of fuel or
        computed for most of the time. A timeout with little CPU is a sleeping guest or a
        descheduled worker (a busy machine): only a second one in a row counts."""
        if fast.outcome is Outcome.FUEL_EXHAUSTED or fast.cpu_s >= fast.wall_s / 2:
            return True
        self._inline_strikes += 1
        return self._inline_strikes >= 2

    def try_inline(self, invocation: Invocation) -> tuple[Result | None, float]:
        """Run with the inline budget: (result, cpu seconds), or (None, cpu seconds spent)
        when the run outgrew the budget (or did recently) and must go to `run`."""
        if time.monotonic() < self._inline_after:
            return None, 0.0
        return self._run(invocation, inline=True)

    def _run(self, invocation: Invocation, inline: bool) -> tuple[Result | None, float]:
        plan = self._inline_plan if inline else self._plan
        info = self._info(invocation) if self.observers else None
        if info is not None and not inline:
            notify_started(self.observers, info)
        fast = self._engine.run_plan(plan, self._env(invocation), invocation.stdin)
        if inline and ((fast.outcome is Outcome.FUEL_EXHAUSTED and plan.fuel != self._plan.fuel)
                       or (fast.outcome is Outcome.TIMEOUT and plan.timeout_s != self._timeout)):
            if self._outgrew_inline(fast):
                self._inline_after = time.monotonic() + INLINE_BACKOFF
            return None, fast.cpu_s
        self._inline_strikes = 0
        result = fast.to_result(self.module_name, self.sha256, self._limits)
        result.coldstart = not self.warm
        self.warm = True
        if info is not None:
            # An inline run is over before a monitor could sample it: only its end is told.
            notify_finished(self.observers, info, result)
        return result, fast.cpu_s


class MeteredFunction(_FastBase):
    """A function run by `FastEngine.run_metered`: a `Meter` per run holds its
    directories (a fresh scratch directory among them), quotas, caps and budget, as
    the sandbox's would. Never inline (see the module docstring)."""

    kind = "fast-metered"

    def run(self, invocation: Invocation) -> Result:
        """Run once in a fresh instance under a fresh meter (a guest thread)."""
        policy = self.spec.policy
        limits, grants = policy.limits, policy.capabilities.dirs
        info = self._info(invocation) if self.observers else None
        # Checked per run, as the sandbox does (a directory removed since is refused), and
        # held from the check to the run's end.
        with checked_preopens(policy) as preopens, Scratch(policy.capabilities) as scratch:
            if scratch.grant is not None:
                preopens.append((scratch.grant.host, True))
                grants = (*grants, scratch.grant)
            if info is not None:
                info.writable_dirs = tuple(grant.shown for grant in grants if grant.writable)
                notify_started(self.observers, info)
            deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
            meter = Meter(limits, deadline, preopens, invocation.stdin)
            fast = self._engine.run_metered(self._module, meter, self.spec.args,
                                            self._env(invocation),
                                            dirs=[grant.guest for grant in grants],
                                            program=self.module_name)
        result = fast.to_result(self.module_name, self.sha256, self._limits)
        result.scratch, result.cleanup_error = scratch.kept, scratch.failure
        result.coldstart = not self.warm
        self.warm = True
        if info is not None:
            notify_finished(self.observers, info, result)
        return result


class LimitsTooLarge(ModuleError):
    """No fast engine can be built for a function's limits (memory past the pool's 4 GiB
    slots, tables past its elements): the sandbox executor serves it."""


class _Pool(NamedTuple):
    """What a `FastEngine`'s pool is built for: its configuration and slot sizes."""

    config: EngineConfig
    memory: int
    table_elements: int
    tables: int

    @classmethod
    def for_spec(cls, spec: FunctionSpec, loaded: LoadedModule) -> _Pool:
        """The standard slots, or a function's own when its limits are larger, with as
        many tables per instance as its policy allows (up to the pool's); the
        configuration `loaded` was compiled for (a tripwire's, or its epochs twin's for a
        module the rewriting cannot serve)."""
        limits = spec.policy.limits
        config = EngineConfig.for_limits(limits)
        if config.tripwire and not loaded.tripwire:
            config = config.with_epochs()
        return cls(config, max(POOL_MEMORY, limits.max_memory),
                   max(_TABLE_ELEMENTS, limits.max_table_elements), limits.max_tables)


class FastExecutor:
    """Prepares functions on the fast path; `threads` bounds concurrent runs."""

    kind = "fast"

    def __init__(self, threads: int, observers: Sequence[RunObserver] = ()) -> None:
        self.observers = tuple(observers)
        self._threads = threads
        self._lock = threading.Lock()
        self._engines: dict[_Pool, FastEngine] = {}
        self._modules: dict[tuple[_Pool, str], FastModule] = {}

    def prepare(self, spec: FunctionSpec, loaded: LoadedModule) -> FastFunction | MeteredFunction:
        """Map the module's cached `.cwasm` into the fast engine (compiled modules are
        kept for the life of the worker, so a reload of an unchanged module is free).
        Raises ModuleError for limits no fast engine can be built for."""
        pool = _Pool.for_spec(spec, loaded)
        with self._lock:
            engine = self._engines.get(pool)
            if engine is None:
                try:
                    # One slot per guest thread plus one for the event loop's inline runs.
                    engine = FastEngine(pool.config, max_instances=self._threads + 1,
                                        max_memory=pool.memory,
                                        table_elements=pool.table_elements,
                                        max_tables=pool.tables)
                except UsageError as exc:
                    raise LimitsTooLarge(f"cannot hold its limits: {exc.message}") from None
                self._engines[pool] = engine
            module = self._modules.get((pool, loaded.sha256))
            if module is None:
                module = self._modules[(pool, loaded.sha256)] = self._load(
                    engine, pool.config, loaded)
        if needs_meter(spec, loaded) is not None:
            return MeteredFunction(spec, module, loaded.sha256, self.observers)
        return FastFunction(spec, module, loaded.sha256, self.observers)

    @staticmethod
    def _load(engine: FastEngine, config: EngineConfig, loaded: LoadedModule) -> FastModule:
        standard = get_engine(config)
        # Only a cache entry that passes the cache's owner, mode and MAC checks is mapped.
        with standard.cache.open(standard.fingerprint, loaded.sha256) as cached:
            if cached is not None:
                return engine.deserialize_file(cached, loaded.name)
        return engine.deserialize(bytes(loaded.module.serialize()), loaded.name)

    def close(self) -> None:
        """Close every engine (each waits for its runs). Safe twice."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
            self._modules.clear()
        for engine in engines:
            engine.close()

"""The sandbox inside an isolated worker: the C API's or wasmtime-py's, one per worker.

The parent names it in the `WorkerPlan` (`plan.backend`, from
`stockade.sandbox.backend.worker_backend`); the worker imports it with `preload` while
it can still read its installation (before `harden`: afterwards a package under a
private directory, such as a virtualenv in a 0700 temporary directory, is out of the
worker's uid's reach), then builds it with `open_backend`. Only the named backend is
imported: a C-API worker never imports wasmtime-py, whose import is most of a worker's
start-up.

A module the C-API loader leaves to wasmtime-py (a `.cwasm`, bytes that are not a
module, invalid WAT, a module the compile guard or validation refuses, denied imports,
no `_start`) is not loaded there: `load` returns None, the worker answers `fallback`, and
its parent sends the run to a wasmtime-py worker, which gives the canonical result or
error. No module is compiled outside a confined worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .guestmem import linear_memory_bytes

if TYPE_CHECKING:
    import wasmtime

    from ..engine.cache import AotCache
    from ..engine.config import EngineConfig
    from ..engine.fastpath import FastModule
    from ..invocation import Invocation
    from ..observe import RunObserver
    from ..policy import Limits, Policy
    from ..result import Result
    from ..sandbox.backend import Backend

__all__ = ["WorkerBackend", "open_backend", "preload", "worker_engine_config"]

# What each backend runs, imported before confinement. The C API's: its sandbox, the
# fast path and its native library, and what a run imports lazily (the compile guard,
# the metered host calls and their linking, scratch directories' tempfile).
_MODULES: dict[str, tuple[str, ...]] = {
    "capi": ("stockade.sandbox.capi", "stockade.engine.fastpath",
             "stockade.engine.fastpath._metered", "stockade.engine.guard",
             "stockade.engine.tripwire", "stockade.hostcalls.meter", "tempfile"),
    # wasmtime-py, the system libraries its library maps (libgcc_s), and the fast path's
    # wat2wasm, which `.wat` modules go through (engine.loader.wat_binary).
    "wasmtime": ("wasmtime", "stockade.sandbox.sandbox", "stockade.engine.fastpath"),
}


def worker_engine_config(limits: Limits, backend: Backend,
                         process_deadline: bool) -> EngineConfig:
    """The engine configuration of a worker running `backend` under `limits` (its AoT
    cache entries' too, which the parent reseals for it): the C API's keeps the deadline
    by process (`process_deadline`) or else as in-process runs do (a tripwire where one
    serves); wasmtime-py's keeps epochs: its one engine, made before confinement, serves
    every module (a tripwire engine makes an epochs twin for what it cannot rewrite),
    and RLIMIT_AS is sized for the policy's memories, without a tripwire page's."""
    from ..engine.config import EngineConfig

    if backend == "wasmtime":
        return EngineConfig.for_limits(limits, tripwire=False)
    return EngineConfig.for_limits(limits, process_deadline=process_deadline)


class WorkerBackend(Protocol):
    """The sandbox a worker wraps: `load` module bytes, `run` what it loaded."""

    name: Backend
    policy: Policy

    def load(self, data: bytes, name: str) -> Any | None:
        """The module compiled (or from the AoT cache), or None when this backend
        leaves it to wasmtime-py's. Raises ModuleError."""

    def run(self, loaded: Any, invocation: Invocation) -> Result:
        """Run a loaded module once in a fresh instance."""

    def wasmtime_engine(self) -> wasmtime.Engine | None:
        """wasmtime-py's engine, whose per-memory reservation sizes RLIMIT_AS; None for
        a pooling engine, whose memories are mapped already (made by this call)."""

    def overdue(self, wall_s: float, cpu_s: float) -> Result | None:
        """The run in progress as its deadline would have ended it now (None: none in
        progress); called by `Overrun` on its own thread, the process ends next."""


def preload(backend: Backend) -> None:
    """Import everything `backend` runs (see the module docstring). A fast path this
    host cannot load is left for the run to report."""
    from ..errors import FastPathUnavailable

    for name in _MODULES[backend]:
        try:
            importlib.import_module(name)
        except FastPathUnavailable:
            if backend == "capi":
                raise  # the parent chose the C API: it loaded there, it must load here


@dataclass
class _Loaded:
    """A module loaded on the C API, as the worker keeps it."""

    fast: FastModule
    sha256: str
    name: str
    ran: bool = False

    def close(self) -> None:
        """Free the module (the worker forgot it: `ModuleMemo`)."""
        self.fast.close()


class _Capi:
    """`CapiSandbox` in a worker: a one-slot pooling engine made before confinement."""

    name: Backend = "capi"

    def __init__(self, policy: Policy, observers: Sequence[RunObserver],
                 cache: AotCache, process_deadline: bool) -> None:
        from ..sandbox.capi import CapiSandbox

        self.policy = policy
        config = worker_engine_config(policy.limits, self.name, process_deadline)
        self.sandbox = CapiSandbox(policy, observers=observers, cache=cache,
                                   engine_config=config)
        self._running: tuple[_Loaded, bool] | None = None  # and whether it is cold

    def load(self, data: bytes, name: str) -> Any | None:
        loaded = self.sandbox.load_bytes(data, name)
        return None if loaded is None else _Loaded(*loaded, name)

    def run(self, loaded: Any, invocation: Invocation) -> Result:
        # Warm, as wasmtime-py's sandbox says, when this worker ran the module before.
        coldstart, loaded.ran = not loaded.ran, True
        self._running = loaded, coldstart
        try:
            return self.sandbox.run_loaded(loaded.fast, loaded.sha256, loaded.name,
                                           invocation, coldstart=coldstart)
        finally:
            self._running = None

    def wasmtime_engine(self) -> wasmtime.Engine | None:
        _ = self.sandbox.engine  # the pool (every slot's reservation) is mapped now
        return None

    def overdue(self, wall_s: float, cpu_s: float) -> Result | None:
        running = self._running
        fast = self.sandbox.engine.overdue(wall_s, cpu_s, linear_memory_bytes) \
            if running is not None else None
        if fast is None or running is None:
            return None
        loaded, coldstart = running
        result = fast.to_result(loaded.name, loaded.sha256, self.policy.limits.as_dict())
        result.coldstart = coldstart
        return result


class _Wasmtime:
    """wasmtime-py's `Sandbox` in a worker."""

    name: Backend = "wasmtime"

    def __init__(self, policy: Policy, observers: Sequence[RunObserver]) -> None:
        from ..sandbox import Sandbox

        self.policy = policy
        self.sandbox = Sandbox(policy, observers=observers, engine_config=worker_engine_config(
            policy.limits, self.name, process_deadline=False))

    def load(self, data: bytes, name: str) -> Any | None:
        return self.sandbox.load(data, name=name)

    def run(self, loaded: Any, invocation: Invocation) -> Result:
        return self.sandbox.run(loaded, invocation)

    def wasmtime_engine(self) -> wasmtime.Engine | None:
        return self.sandbox.engine.wasmtime

    def overdue(self, wall_s: float, cpu_s: float) -> Result | None:
        return None  # its engine keeps epochs: the guest stops itself


def open_backend(backend: Backend, policy: Policy, observers: Sequence[RunObserver],
                 cache: Path | None, *, process_deadline: bool = False) -> WorkerBackend:
    """The worker's sandbox for `policy`; `cache` is the AoT cache directory where this
    worker reaches it (None: the default). With `process_deadline` the C API's engine
    has no epochs: the worker ends itself at a run's deadline (`isolate.overrun`)."""
    if backend == "capi":
        from ..engine.cache import AotCache
        from ..paths import cache_dir

        return _Capi(policy, observers, AotCache(cache if cache is not None else cache_dir()),
                     process_deadline)
    return _Wasmtime(policy, observers)

"""Executors: how a function's module runs once per request, in a fresh instance.

    Executor.prepare(spec) -> Prepared          (load from the AoT cache, link, check)
    Prepared.run(invocation) -> Result           (prepared.py)

Every function runs on the C-API fast path (`FastExecutor`, `fastexec.py`: plain runs,
or metered runs for functions granted directories, caps or a budget the native library
cannot count). `SandboxExecutor` (`stockade.Sandbox`, wasmtime-py) serves a server told
`executor = "sandbox"`, or one where the fast path is unavailable: a server-wide choice,
never one per function. A function that must not run in the gateway worker process
(`FunctionSpec.pooled`) is prepared by its cordon's `WorkerPool` instead (`pool.py`),
whose processes use `Executors` too. A module that imports what Stockade does not
provide becomes a `DeniedFunction`, refused on every request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..engine import CompileGuard, EngineConfig, LoadedModule, get_engine
from ..errors import ModuleError, ModuleNotFound, StockadeError
from ..invocation import Invocation
from ..observe import RunObserver
from ..result import Result
from ..sandbox import Sandbox
from ..sandbox.imports import denied_import
from ..sandbox.provenance import gate
from .manifest import FunctionSpec
from .prepared import DeniedFunction, Prepared

if TYPE_CHECKING:
    from .fastexec import FastExecutor
    from .pool import WorkerPool

__all__ = ["SandboxFunction", "SandboxExecutor", "Executors", "load_standard", "named_error"]

logger = logging.getLogger("stockade.gateway")


class SandboxFunction(Prepared):
    """Runs through `stockade.Sandbox` (observers are called by the sandbox)."""

    kind = "sandbox"

    def __init__(self, spec: FunctionSpec, loaded: LoadedModule,
                 observers: Sequence[RunObserver], verified: bytes | None = None) -> None:
        super().__init__(spec, loaded.sha256, observers)
        self._sandbox = Sandbox(spec.policy, observers=observers)
        # Under [trust] the sandbox runs only what it verified itself: given the gate's
        # bytes, not the module loaded from them, which it refused, every signed function
        # with it (found by review).
        self._loaded = loaded if verified is None \
            else self._sandbox.load(verified, spec.module.name)

    def run(self, invocation: Invocation) -> Result:
        """Run through the sandbox (its observers record the run)."""
        return self._sandbox.run(self._loaded, invocation)


def named_error(exc: ModuleNotFound | ModuleError, name: str) -> StockadeError:
    """`exc` again, its message prefixed with the function's name."""
    kind = ModuleNotFound if isinstance(exc, ModuleNotFound) else ModuleError
    return kind(f"function {name}: {exc.message}")


def load_standard(spec: FunctionSpec, data: bytes | None = None) -> LoadedModule:
    """The function's module (or its already verified bytes, `data`) through the standard
    engine and the AoT cache. Raises ModuleNotFound or ModuleError."""
    limits = spec.policy.limits
    engine, guard = get_engine(EngineConfig.for_limits(limits)), CompileGuard.for_limits(limits)
    allowed = spec.policy.capabilities.allow_precompiled
    if data is not None:
        return engine.load(data, name=spec.module.name, guard=guard, allow_precompiled=allowed)
    return engine.load(spec.module, guard=guard, allow_precompiled=allowed)


class SandboxExecutor:
    """Prepares functions to run through `stockade.Sandbox`."""

    kind = "sandbox"

    def __init__(self, observers: Sequence[RunObserver] = ()) -> None:
        self.observers = tuple(observers)

    def prepare(self, spec: FunctionSpec, loaded: LoadedModule,
                verified: bytes | None = None) -> Prepared:
        """A `SandboxFunction` for an already loaded module (from `verified`, the trust
        gate's bytes, when [trust] requires signatures)."""
        return SandboxFunction(spec, loaded, self.observers, verified)


class Executors:
    """Prepares functions on the fast path, or all in the sandbox (`mode`: auto or fast,
    or sandbox); `pool_workers` processes per cordon pool."""

    def __init__(self, mode: str, threads: int, observers: Sequence[RunObserver] = (),
                 pool_workers: int = 2) -> None:
        self.mode = mode
        self.pool_workers = pool_workers
        self.observers = tuple(observers)
        self.sandbox = SandboxExecutor(observers)
        self._threads = threads
        self._fast: FastExecutor | None = None
        self._fast_failed = mode == "sandbox"

    def prepare(self, spec: FunctionSpec,
                pools: Mapping[str, WorkerPool] | None = None) -> Prepared:
        """Prepare `spec`: in its cordon's pool when it is pooled and `pools` are given
        (`pool.start_pools`), else load its module into this process. A module that a
        [trust] policy refuses is never compiled. Raises ModuleNotFound or ModuleError."""
        checked = gate(spec.module, spec.policy)  # a [trust] that requires signatures
        if checked is not None and checked.data is None:
            return DeniedFunction(spec, checked.sha256, f"signature {checked.refusal}",
                                  self.observers)
        if pools is not None and spec.pooled:
            return pools[spec.cordon].prepare(spec, self.observers)
        loaded = load_standard(spec, checked.data if checked is not None else None)
        denied = denied_import(loaded.module)
        if denied is not None:
            name, reason = denied
            return DeniedFunction(spec, loaded.sha256, f"import {name} denied: {reason}",
                                  self.observers)
        fast = self._fast_executor()
        verified = None if checked is None else checked.data
        if fast is None:
            return self.sandbox.prepare(spec, loaded, verified)
        from .fastexec import LimitsTooLarge

        try:
            return fast.prepare(spec, loaded)
        except LimitsTooLarge as exc:  # `serve` refused such a function at start
            logger.warning("function %s: the fast path %s; served by the sandbox executor",
                           spec.name, exc.message)
            return self.sandbox.prepare(spec, loaded, verified)

    def _fast_executor(self) -> FastExecutor | None:
        if self._fast is None and not self._fast_failed:
            try:
                from .fastexec import FastExecutor

                self._fast = FastExecutor(self._threads, self.observers)
            except Exception as exc:  # noqa: BLE001 - fall back to the sandbox, say why
                self._fast_failed = True
                logger.warning("fast path unavailable, using the sandbox: %s", exc)
        return self._fast

    def close(self) -> None:
        """Free the fast path's engines (after in-flight runs). Safe twice."""
        if self._fast is not None:
            self._fast.close()
            self._fast = None

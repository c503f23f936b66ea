"""`CapiSandbox`: the in-process sandbox on wasmtime's C API, without wasmtime-py.

Same interface and results as `Sandbox` for what it serves (`backend.capi_refusal` says what
that is): `CapiSandbox(policy).run(path, invocation) -> Result`. A run gets a one-slot
`FastEngine` (pooling allocator, memory slot = the policy's memory limit), so limits hold as
the standard sandbox holds them: fuel, the deadline (a tripwire, or epochs under a fuel
budget; sleeps in `poll_oneoff` end at it too), the memory limit, the output cap while the
guest writes, the host-call budget. A policy with granted or scratch directories, per-call
caps, or a budget the native library cannot count runs under a `Meter`
(`FastEngine.run_metered`): the sandbox's own host calls, quotas and errnos. Under
`require_signature` the trust gate's verified bytes are what is compiled. `.wat` text is
compiled to its binary by the C API. Modules load through the same AoT cache and its stat
index: native code is mapped only from a cache entry `AotCache.open` verified (owner, mode,
this host's MAC), and a fresh compile is sealed into it, never from anywhere else.

What this loader does not handle itself goes to wasmtime-py's `Sandbox`, which gives the
canonical result or error: a `.cwasm` file, a module that is not WebAssembly, invalid
WAT, a module that fails the compile guard or validation, imports what Stockade does
not provide, or has no `_start`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..engine.cache import AotCache
from ..engine.config import EngineConfig
from ..engine.fastpath import COUNTED_CALLS, EnvBlock, FastEngine, FastModule, encode_env
from ..engine.loader import ModuleFile, sniff_kind, wat_binary
from ..errors import StockadeError, UsageError
from ..hostcalls.routing import meter_reason, owned_imports
from ..invocation import Invocation
from ..observe import RunInfo, RunObserver, notify_finished, notify_started
from ..paths import cache_dir
from ..progress import progress
from .arguments import invocation_argument, policy_argument
from .provenance import denied_result, gate
from .scratch import Scratch
from .wasi import checked_preopens, guest_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..policy import Policy
    from ..result import Result
    from .sandbox import Sandbox

__all__ = ["CapiSandbox", "needs_meter"]

_WASM_MAGIC = b"\0asm"


def needs_meter(policy: Policy, module: FastModule) -> bool:
    """Whether runs of `module` under `policy` need host calls metered in Python
    (`run_metered`) rather than the native run's (`hostcalls.routing.meter_reason`)."""
    owned = owned_imports(module.imports())
    return meter_reason(policy, owned, COUNTED_CALLS) is not None


class CapiSandbox:
    """Runs `.wasm` modules under one policy on wasmtime's C API, each run in a fresh
    instance. Raises what `Sandbox.run` raises (ModuleNotFound, ModuleError); everything
    the guest does is in the `Result`. `engine_config` replaces the policy's
    (`EngineConfig.for_limits`). Closing is safe twice."""

    def __init__(self, policy: Policy, *, observers: Sequence[RunObserver] = (),
                 cache: AotCache | None = None,
                 engine_config: EngineConfig | None = None) -> None:
        self.policy = policy = policy_argument(policy, "CapiSandbox")
        self.observers = tuple(observers)
        limits = policy.limits
        self._config = engine_config or EngineConfig.for_limits(limits)
        self._cache = cache if cache is not None else AotCache(cache_dir())
        # Per module (sha256): whether its host calls are served in Python under a
        # `Meter` (`FastEngine.run_metered`), for what the native run does not hold.
        self._metered: dict[str, bool] = {}
        self._engine: FastEngine | None = None
        self._standard: Sandbox | None = None
        self._closed = False

    @property
    def engine(self) -> FastEngine:
        """This sandbox's one-slot engine (made on first use). Raises UsageError once
        the sandbox is closed (a run had made it again)."""
        if self._closed:
            raise UsageError("this CapiSandbox is closed")
        if self._engine is None:
            limits = self.policy.limits
            self._engine = FastEngine(self._config, max_instances=1,
                                      max_memory=limits.memory_cap(self._config.gc),
                                      table_elements=limits.max_table_elements,
                                      max_tables=limits.max_tables)
        return self._engine

    def run(self, module: str | Path, invocation: Invocation | None = None) -> Result:
        """Run the module's `_start` once in a fresh instance and report what happened."""
        if self._closed:  # its fallback would be made again, too
            raise UsageError("this CapiSandbox is closed")
        invocation = invocation_argument(invocation, "CapiSandbox.run")
        path = Path(module)
        verdict = gate(path, self.policy)  # None unless a signature is required
        if verdict is None:
            loaded = self._load(path)
        elif verdict.data is None:
            return denied_result(verdict, self.policy, invocation, self.observers)
        else:  # the bytes verified are the bytes compiled: the file is not read again
            loaded = self._load_bytes(verdict.data, verdict.name, None)
        if loaded is None:
            return self._fallback().run(path, invocation)
        return self.run_loaded(loaded[0], loaded[1], path.name, invocation)

    def load_bytes(self, data: bytes, name: str) -> tuple[FastModule, str] | None:
        """Module bytes (binary or `.wat`) compiled for this sandbox, or from the AoT
        cache, and their sha256; None when wasmtime-py's `Sandbox` must load them (it
        gives the canonical result or error: see the module docstring). For a caller
        that holds the bytes already (an isolated worker); `run_loaded` runs them."""
        return self._load_bytes(data, name, None)

    def run_loaded(self, fast: FastModule, sha256: str, name: str, invocation: Invocation,
                   coldstart: bool = True) -> Result:
        """Run a module `load_bytes` (or `run`) loaded, named `name` in the result;
        `coldstart` False for a module this sandbox ran before (a caller keeping it)."""
        info = RunInfo(module=name, sha256=sha256, invocation=invocation,
                       policy=self.policy, started=time.time(), pid=os.getpid(),
                       coldstart=coldstart)
        env = encode_env(guest_env(self.policy, invocation))
        metered = self._metered.get(sha256)
        if metered is None:
            metered = self._metered[sha256] = needs_meter(self.policy, fast)
        if metered:
            result = self._run_metered(fast, name, sha256, invocation, env, info)
        else:
            limits = self.policy.limits
            plan = self.engine.plan(fast, invocation.args, fuel=limits.fuel,
                                    timeout_s=limits.timeout,
                                    max_memory=limits.memory_cap(self._config.gc),
                                    max_output=limits.max_output,
                                    max_hostcalls=limits.max_hostcalls, program=name,
                                    store_limits=limits.store_limits)
            notify_started(self.observers, info)
            result = self.engine.run_plan(plan, env, invocation.stdin).to_result(
                name, sha256, limits.as_dict())
        result.coldstart = coldstart  # `run`: one engine per sandbox, every module cold
        notify_finished(self.observers, info, result)
        return result

    def _run_metered(self, fast: FastModule, name: str, sha256: str, invocation: Invocation,
                     env: EnvBlock, info: RunInfo) -> Result:
        """One run under a `Meter`, as `Sandbox` runs it: the granted directories and the
        scratch directory preopened, their quotas and the per-call caps metered."""
        from ..hostcalls.meter import Meter  # only metered runs pay for it

        policy = self.policy
        limits = policy.limits
        guests = [grant.guest for grant in policy.capabilities.dirs]
        info.writable_dirs = tuple(g.shown for g in policy.capabilities.dirs if g.writable)
        # The granted directories are held from their check to the run's end.
        with checked_preopens(policy) as preopens, Scratch(policy.capabilities) as scratch:
            if scratch.grant is not None:
                preopens.append((scratch.grant.host, True))
                guests.append(scratch.grant.guest)
                info.writable_dirs += (scratch.grant.host,)
            notify_started(self.observers, info)
            # The timeout is the guest's: it starts now, as in `Sandbox.run`.
            deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
            meter = Meter(limits, deadline, preopens, invocation.stdin)
            result = self.engine.run_metered(fast, meter, invocation.args, env, dirs=guests,
                                             program=name).to_result(name, sha256,
                                                                     limits.as_dict())
        result.scratch, result.cleanup_error = scratch.kept, scratch.failure
        return result

    def _load(self, path: Path) -> tuple[FastModule, str] | None:
        """The module compiled for this engine and its sha256, from the AoT cache or a
        compile sealed into it; None when wasmtime-py's sandbox should load it instead.
        The file is opened once (`ModuleFile`): raises ModuleNotFound or ModuleError for
        what is no module file or past the size limit, as `Sandbox` does."""
        with ModuleFile(path, self.policy.limits.max_module_size) as file:
            ident = file.ident()
            fingerprint = self._config.fingerprint()
            sha256 = self._cache.recall(ident)
            cached = None if sha256 is None else self._from_cache(fingerprint, sha256,
                                                                  path.name)
            if sha256 is not None and cached is not None:
                return cached, sha256
            data = file.read()
        return self._load_bytes(data, path.name, ident)

    def _load_bytes(self, data: bytes, name: str,
                    ident: str | None) -> tuple[FastModule, str] | None:
        """`_load` of bytes already read (a `.wat` compiled to its binary first);
        `ident` (`file_ident`) remembers the file's digest in the cache's stat index."""
        if len(data) > self.policy.limits.max_module_size:
            return None
        if not data.startswith(_WASM_MAGIC):
            try:
                if sniff_kind(data[:64], name) != "wat":
                    return None  # a .cwasm or not a module: the standard loader says which
                data = wat_binary(data, name)
            except StockadeError:
                return None
        fingerprint = self._config.fingerprint()
        sha256 = hashlib.sha256(data).hexdigest()
        cached = self._from_cache(fingerprint, sha256, name)
        if cached is None:
            cached = self._compile(data, name, fingerprint, sha256)
        if cached is None:
            return None
        if ident is not None:
            self._cache.remember(ident, sha256)
        return cached, sha256

    def _from_cache(self, fingerprint: str, sha256: str, name: str) -> FastModule | None:
        """The module mapped from a verified cache entry, or None (see `AotCache.open`)."""
        try:
            engine = self.engine
        except UsageError:  # no pool fits (`ulimit -v`): not the entry's fault, kept
            return None
        with self._cache.open(fingerprint, sha256) as entry:
            if entry is None:
                return None
            try:
                return engine.deserialize_file(entry, name)
            except StockadeError:
                pass
        self._cache.evict(fingerprint, sha256)
        return None

    def _compile(self, data: bytes, name: str, fingerprint: str,
                 sha256: str) -> FastModule | None:
        """Compile under the policy's compile guard and seal the result into the cache;
        None when the guard, wasmtime or the linker refuses it (wasmtime-py's sandbox then
        reports why, in its words)."""
        from ..engine.guard import CompileGuard  # reads code shapes: only to compile
        from ..engine.tripwire import Unsupported

        try:
            guard = CompileGuard.for_limits(self.policy.limits)
            with progress(f"compiling {name} ({len(data) / 1e6:.1f} MB, once per engine "
                          "configuration)"):
                module = self.engine.compile(data, name, guard)
        except (StockadeError, Unsupported):  # Unsupported: it needs epochs (Sandbox)
            return None
        self._cache.store(fingerprint, sha256, module.serialize())
        return module

    def _fallback(self) -> Sandbox:
        if self._standard is None:
            from .sandbox import Sandbox

            self._standard = Sandbox(self.policy, observers=self.observers)
        return self._standard

    def close(self) -> None:
        """Free the engine and its modules; later runs raise UsageError. Safe to call
        twice."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        if self._standard is not None:
            self._standard.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called (runs then raise UsageError)."""
        return self._closed

    def __enter__(self) -> CapiSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

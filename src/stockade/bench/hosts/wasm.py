"""In-process WebAssembly hosts: Stockade's `Sandbox`, and bare wasmtime-py (Cranelift or
the Pulley interpreter) as the no-limits reference. Each request gets a fresh instance of
a module compiled once, the way a warm server would run it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .base import Host, HostUnavailable, Layout, Request, Sample, finish_sample, scratch_root

__all__ = ["StockadeHost", "StockadeFastHost", "WasmtimeHost", "STOCKADE_MAX_OUTPUT"]

STOCKADE_MAX_OUTPUT = 64 * 1024**2


class StockadeHost(Host):
    """`Sandbox(policy).run(loaded_module, Invocation(...))` under the default profile
    (output cap raised to 64 MiB for the 16 MiB echo). Modules are loaded once, from the
    AoT cache in `options["cache_dir"]`. With `options["isolate"] == "process"`, an
    `IsolatedSandbox` (its worker keeps the module; the path is sent per run)."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        os.environ["STOCKADE_CACHE_DIR"] = str(options["cache_dir"])
        try:
            from ...invocation import Invocation
            from ...isolate.factory import make_sandbox
            from ...policy import Policy
        except ImportError as exc:
            raise HostUnavailable(f"stockade.sandbox cannot be imported: {exc}") from exc
        policy = Policy.from_profile(str(options.get("profile", "default")))
        self.invocation = Invocation
        self.isolated = options.get("isolate") == "process"
        self.sandbox: Any = make_sandbox(policy.with_limits(max_output=STOCKADE_MAX_OUTPUT),
                                         "process" if self.isolated else "none")
        self.loaded: dict[str, Any] = {}
        self.payloads: dict[str, bytes] = {}

    def run(self, request: Request) -> Sample:
        """Run in a fresh instance; loading and reading the payload happen before the clock."""
        loaded = self.loaded.get(request.guest)
        if loaded is None:
            path = self.layout.wasm(request.guest)
            loaded = self.loaded[request.guest] = path if self.isolated \
                else self.sandbox.load(path)
        stdin = b""
        if request.stdin:
            stdin = self.payloads.setdefault(request.stdin, request.payload())
        invocation = self.invocation(args=request.args, stdin=stdin)
        started, cpu = time.perf_counter(), time.process_time()
        result = self.sandbox.run(loaded, invocation)
        error = "" if result.ok else f"{result.outcome.value}: {result.message}"
        sample = finish_sample(started, cpu, result.stdout, result.stderr, result.ok, error)
        sample.extra["guest_peak_memory_kb"] = result.usage.peak_memory_bytes / 1024
        return sample

    def close(self) -> None:
        """Close the sandbox."""
        self.sandbox.close()


class StockadeFastHost(Host):
    """The gateway's per-request path: `stockade.engine.fastpath` (wasmtime C API, pooling
    allocator, memfd capture) under the default profile's timeout and memory limits (and
    its fuel budget, when it has one).
    No preopens or host-call metering: the path serverless functions take."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        try:
            from ...engine import EngineConfig
            from ...engine.fastpath import FastEngine
            from ...errors import FastPathUnavailable
            from ...policy import Policy
        except ImportError as exc:
            raise HostUnavailable(f"stockade.engine.fastpath cannot be imported: {exc}") from exc
        self.limits = Policy.from_profile("default").limits
        try:
            self.engine = FastEngine(EngineConfig.for_limits(self.limits), max_instances=4,
                                     max_memory=self.limits.max_memory)
        except FastPathUnavailable as exc:
            raise HostUnavailable(str(exc)) from exc
        self.modules: dict[str, Any] = {}
        self.payloads: dict[str, bytes] = {}

    def run(self, request: Request) -> Sample:
        """Run in a fresh instance from the pool; compiling happens before the clock."""
        module = self.modules.get(request.guest)
        if module is None:
            data = self.layout.wasm(request.guest).read_bytes()
            module = self.modules[request.guest] = self.engine.compile(data, request.guest)
        stdin = b""
        if request.stdin:
            stdin = self.payloads.setdefault(request.stdin, request.payload())
        started, cpu = time.perf_counter(), time.process_time()
        result = module.run(request.args, (), stdin, fuel=self.limits.fuel,
                            timeout_s=self.limits.timeout, max_memory=self.limits.max_memory,
                            max_output=STOCKADE_MAX_OUTPUT)
        ok = result.exit_code == 0 and result.guest_exit_code == 0
        error = "" if ok else f"{result.outcome.value}: {result.message}"
        return finish_sample(started, cpu, result.stdout, result.stderr, ok, error)

    def close(self) -> None:
        """Close the engine."""
        self.engine.close()


class WasmtimeHost(Host):
    """Bare wasmtime-py: `Store` + `WasiConfig` + `InstancePre.instantiate` + `_start`, no
    fuel, no epochs, no limits. `options["strategy"]` is `cranelift` or `pulley`."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        import wasmtime

        self.wasmtime = wasmtime
        self.strategy = str(options.get("strategy", "cranelift"))
        config = wasmtime.Config()
        if self.strategy == "pulley":
            try:
                config.target = "pulley64"
            except wasmtime.WasmtimeError as exc:
                raise HostUnavailable(f"this wasmtime has no Pulley target: {exc}") from exc
        elif self.strategy != "cranelift":
            raise HostUnavailable(f"unknown strategy {self.strategy!r}")
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.modules: dict[str, Any] = {}
        self.pres: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}
        self.scratch = tempfile.TemporaryDirectory(prefix="stockade-bench-wasmtime-",
                                                   dir=scratch_root())
        self.out = Path(self.scratch.name) / "stdout"
        self.err = Path(self.scratch.name) / "stderr"

    def _pre(self, guest: str) -> Any:
        pre = self.pres.get(guest)
        if pre is None:
            module = self.wasmtime.Module.from_file(self.engine, str(self.layout.wasm(guest)))
            self.sizes[f"{guest}.cwasm ({self.strategy})"] = len(module.serialize())
            self.modules[guest] = module
            pre = self.pres[guest] = self.linker.instantiate_pre(module)
        return pre

    def run(self, request: Request) -> Sample:
        """Fresh store and instance; the clock covers set-up, `_start` and reading output."""
        wasmtime = self.wasmtime
        pre = self._pre(request.guest)
        started, cpu = time.perf_counter(), time.process_time()
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [request.guest, *request.args]
        if request.stdin:
            wasi.stdin_file = request.stdin
        wasi.stdout_file = str(self.out)
        wasi.stderr_file = str(self.err)
        store.set_wasi(wasi)
        code, error = 0, ""
        try:
            instance = pre.instantiate(store)
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            code = exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            code, error = -1, str(exc).splitlines()[0]
        stdout, stderr = self.out.read_bytes(), self.err.read_bytes()
        return finish_sample(started, cpu, stdout, stderr, code == 0, error)

    def artifacts(self) -> dict[str, int]:
        """Serialized size of each compiled module."""
        return dict(self.sizes)

    def close(self) -> None:
        """Remove the scratch directory."""
        self.scratch.cleanup()

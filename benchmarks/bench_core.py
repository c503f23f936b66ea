"""Core benchmarks (pytest-benchmark): `make bench` or
`.venv/bin/pytest benchmarks/bench_core.py --benchmark-enable`.

Compare within one run: warm run from the AoT cache vs compiling from bytes; CPython
cold (a fresh `stockade run` process, module from the cache) vs in-process; the compute
guest under fuel, under epochs, with neither, and natively.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, Policy, Sandbox
from stockade.engine import EngineConfig, LoadedModule

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "build" / "guests" / "hello.wasm"
COMPUTE = ROOT / "build" / "guests" / "compute.wasm"
NATIVE_COMPUTE = ROOT / "build" / "native" / "compute"
PYTHON = ROOT / "build" / "real" / "python.wasm"
COMPUTE_ARGS = ("2000000",)


def test_hello_warm_from_cache(benchmark: pytest.FixtureFunction) -> None:
    sandbox = Sandbox(Policy.from_profile("strict"))
    module = sandbox.load(HELLO)
    sandbox.run(module)
    benchmark(sandbox.run, module, Invocation())


def test_hello_from_wasm_bytes(benchmark: pytest.FixtureFunction) -> None:
    data = HELLO.read_bytes()
    sandbox = Sandbox(Policy.from_profile("strict"))

    def compile_and_run() -> None:
        # Compiled in memory each time, bypassing the AoT cache.
        module = wasmtime.Module(sandbox.engine.wasmtime, data)
        sha = hashlib.sha256(data).hexdigest()
        sandbox.run(LoadedModule(module, sha, HELLO.name, False, 0.0), Invocation())

    benchmark.pedantic(compile_and_run, rounds=20, iterations=1)


def test_cpython_cold_process(benchmark: pytest.FixtureFunction) -> None:
    cmd = [sys.executable, "-m", "stockade", "run", str(PYTHON), "--", "-c", "print(1)"]
    subprocess.run(cmd, check=True, capture_output=True)  # fill the cache
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True, "capture_output": True},
                       rounds=10, iterations=1)


def test_cpython_in_process(benchmark: pytest.FixtureFunction) -> None:
    sandbox = Sandbox()
    module = sandbox.load(PYTHON)
    invocation = Invocation(args=("-c", "print(1)"))
    sandbox.run(module, invocation)
    benchmark.pedantic(sandbox.run, args=(module, invocation), rounds=20, iterations=1)


@pytest.mark.parametrize(("fuel", "epochs"), [(True, True), (True, False), (False, True),
                                              (False, False)],
                         ids=["fuel+epochs", "fuel", "epochs", "neither"])
def test_compute_engine_configs(benchmark: pytest.FixtureFunction, fuel: bool,
                                epochs: bool) -> None:
    policy = Policy().with_limits(fuel=10**12 if fuel else None, timeout=60.0)
    sandbox = Sandbox(policy, engine_config=EngineConfig(fuel=fuel, epochs=epochs))
    module = sandbox.load(COMPUTE)
    invocation = Invocation(args=COMPUTE_ARGS)
    assert sandbox.run(module, invocation).ok
    benchmark.pedantic(sandbox.run, args=(module, invocation), rounds=10, iterations=1)


def test_compute_native(benchmark: pytest.FixtureFunction) -> None:
    cmd = [str(NATIVE_COMPUTE), *COMPUTE_ARGS]
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True, "capture_output": True},
                       rounds=10, iterations=1)

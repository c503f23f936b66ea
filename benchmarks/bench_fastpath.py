"""Per-call cost of a fresh instance of hello: the C-API fast path vs wasmtime-py's wrappers.

Both paths do the same work per call: a new store with fuel and an epoch deadline,
WASI with argv and stdin, a pre-instantiated module, `_start`, stdout and stderr
captured. Run (from the repository root, after `scripts/build_guests.py`):

    .venv/bin/pytest benchmarks/bench_fastpath.py --benchmark-enable

The summary line gives both medians in microseconds and their ratio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from pytest_benchmark.fixture import BenchmarkFixture

from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine, FastModule

HELLO = Path(__file__).resolve().parent.parent / "build" / "guests" / "hello.wasm"
ARGS = ["bench"]
STDIN = b"one line of input\n"
EXPECTED = b"Hello from a Stockade sandbox!\narg 1: bench\none line of input\n"
FUEL = 10**9

medians: dict[str, float] = {}


@pytest.fixture(scope="module")
def wasm() -> bytes:
    if not HELLO.exists():
        pytest.fail(f"{HELLO} missing: run scripts/build_guests.py first")
    return HELLO.read_bytes()


@pytest.fixture(scope="module")
def fast_hello(wasm: bytes) -> Iterator[FastModule]:
    with FastEngine(EngineConfig(), max_instances=4) as engine:
        yield engine.compile(wasm, "hello.wasm")


def record(benchmark: BenchmarkFixture, name: str) -> None:
    """Keep the median of a finished benchmark (none when benchmarks are disabled)."""
    if benchmark.stats is not None:
        medians[name] = benchmark.stats.stats.median


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: both medians and their ratio, past output capturing."""
    yield
    if "wrappers" in medians and "fastpath" in medians:
        parts = ", ".join(f"{key} {value * 1e6:.1f} us" for key, value in medians.items())
        ratio = medians["wrappers"] / medians["fastpath"]
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nper call (median): {parts}; wrappers/fastpath = {ratio:.2f}x")


def test_wrappers(benchmark: BenchmarkFixture, wasm: bytes, tmp_path: Path) -> None:
    """Store + WasiConfig + InstancePre + `_start` + stdout/stderr files, via wasmtime-py
    (its default on-demand allocator: the pooling allocator is not exposed)."""
    engine = wasmtime.Engine(EngineConfig().to_wasmtime())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module(engine, wasm))
    stdin = tmp_path / "stdin"
    stdin.write_bytes(STDIN)
    # The same memfd capture as the fast path, so only the call path differs.
    out_fd, err_fd = os.memfd_create("stdout"), os.memfd_create("stderr")
    stdout, stderr = f"/proc/self/fd/{out_fd}", f"/proc/self/fd/{err_fd}"

    def call() -> bytes:
        store = wasmtime.Store(engine)
        store.set_fuel(FUEL)
        store.set_epoch_deadline(1000)
        store.set_limits(memory_size=128 * 1024**2)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["hello.wasm", *ARGS]
        wasi.stdin_file = str(stdin)
        wasi.stdout_file = stdout
        wasi.stderr_file = stderr
        store.set_wasi(wasi)
        start = pre.instantiate(store).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        start(store)
        store.close()
        return os.pread(out_fd, 1 << 20, 0) + os.pread(err_fd, 1 << 20, 0)

    try:
        assert benchmark(call) == EXPECTED
    finally:
        os.close(out_fd)
        os.close(err_fd)
    record(benchmark, "wrappers")


def test_fastpath(benchmark: BenchmarkFixture, fast_hello: FastModule) -> None:
    """The same through `FastEngine.run` (C API, pooling allocator, memfd capture)."""
    result = benchmark(fast_hello.run, ARGS, stdin=STDIN, fuel=FUEL, timeout_s=10.0,
                       max_output=1024**2)
    assert result.stdout == EXPECTED
    record(benchmark, "fastpath")


def test_fastpath_without_stderr(benchmark: BenchmarkFixture, fast_hello: FastModule) -> None:
    """The fast path discarding stderr (one file open fewer per call)."""
    result = benchmark(fast_hello.run, ARGS, stdin=STDIN, fuel=FUEL, timeout_s=10.0,
                       max_output=1024**2, capture_stderr=False)
    assert result.stdout == EXPECTED
    record(benchmark, "fastpath_no_stderr")

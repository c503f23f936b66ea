"""Cost of Stockade's metered host calls on a benign I/O guest (pytest-benchmark).

`.venv/bin/pytest benchmarks/bench_hostcalls.py --benchmark-enable`: the same module, the
same engine configuration and store limits, once through Stockade's `Sandbox` (every
fd_write/fd_read/path_open charged to the run's budgets) and once through a plain
wasmtime linker with WASI defined and nothing interposed. Compare the medians.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, Policy, Sandbox
from stockade.policy import DirGrant

ROOT = Path(__file__).resolve().parent.parent
IO_GUEST = ROOT / "build" / "guests" / "iobench.wasm"
ARGS = ("1024",)  # 4 MiB written and read back in 4 KiB calls: ~2,000 host calls


def policy(out: Path) -> Policy:
    return Policy().with_capabilities(dirs=(DirGrant(out, "/out", writable=True),))


def test_io_metered(benchmark: pytest.FixtureFunction, tmp_path: Path) -> None:
    sandbox = Sandbox(policy(tmp_path))
    module = sandbox.load(IO_GUEST)
    invocation = Invocation(args=ARGS)
    assert sandbox.run(module, invocation).ok
    benchmark.pedantic(sandbox.run, args=(module, invocation), rounds=30, iterations=1)


def test_io_plain_wasi(benchmark: pytest.FixtureFunction, tmp_path: Path) -> None:
    sandbox = Sandbox(policy(tmp_path))
    engine = sandbox.engine.wasmtime
    module = sandbox.load(IO_GUEST).module
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(module)
    limits = sandbox.policy.limits

    def run() -> None:
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=limits.max_memory)
        store.set_fuel(limits.fuel or 0)
        store.set_epoch_deadline(1 << 40)
        config = wasmtime.WasiConfig()
        config.argv = ["iobench.wasm", *ARGS]
        config.preopen_dir(str(tmp_path), "/out", True)
        config.stdout_file = str(tmp_path / "stdout")
        store.set_wasi(config)
        try:
            pre.instantiate(store).exports(store)["_start"](store)
        except wasmtime.ExitTrap as exit_:
            assert exit_.code == 0

    run()
    benchmark.pedantic(run, rounds=30, iterations=1)

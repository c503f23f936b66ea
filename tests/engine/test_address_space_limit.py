"""Under an address-space limit (`ulimit -v`) too small for a memory pool, wasmtime
aborted the whole process (a Rust panic: "failed to create memory pool mapping", 100
lines of backtrace, SIGABRT), from `stockade run` and from `FastEngine` alike (found by
review). The pool is checked against the limit first; a run that cannot map its guest's
memory is an `error` naming the likely cause."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from tests.conftest import guest

LIMIT = 6 * 10**9  # bytes of address space: less than one pool of 4 GiB slots needs


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def test_a_pool_beyond_the_limit_is_a_usage_error() -> None:
    code = ("from stockade.engine import EngineConfig\n"
            "from stockade.engine.fastpath import FastEngine\n"
            "from stockade.errors import UsageError\n"
            "try:\n"
            "    FastEngine(EngineConfig(), max_instances=4)\n"
            "except UsageError as exc:\n"
            "    print(exc.message)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          preexec_fn=_limited, check=False)
    assert done.returncode == 0, done.stderr.decode()[-1000:]
    assert "ulimit -v" in done.stdout.decode()


def test_stockade_run_under_the_limit_ends_with_one_line(tmp_path: Path) -> None:
    # With the module in the AoT cache: a pool that could not be made evicted the entry
    # (one more line), as if the entry were bad.
    env = {**os.environ, "STOCKADE_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "stockade", "run", str(guest("hello.wasm"))]
    warm = subprocess.run(command, capture_output=True, timeout=120, env=env, check=False)
    assert warm.returncode == 0, warm.stderr.decode()[-1000:]
    done = subprocess.run(command, capture_output=True, timeout=120, preexec_fn=_limited,
                          env=env, check=False)
    assert subprocess.run(command, capture_output=True, timeout=120, env=env,
                          check=False).stderr == b""  # the entry is still there, no compile
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125, done.stderr.decode()[-1000:]
    assert len(lines) == 1 and "ulimit -v" in lines[0], lines

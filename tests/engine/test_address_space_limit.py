"""Under an address-space limit (`ulimit -v`) too small for a memory pool, wasmtime
aborted the whole process (a Rust panic: "failed to create memory pool mapping", 100
lines of backtrace, SIGABRT), from `stockade run` and from `FastEngine` alike (found by
review). The pool is checked against the limit first; a run that cannot map its guest's
memory is an `error` naming the likely cause."""

from __future__ import annotations

import resource
import subprocess
import sys

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


def test_stockade_run_under_the_limit_ends_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "stockade", "run", str(guest("hello.wasm"))],
                          capture_output=True, timeout=120, preexec_fn=_limited, check=False)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125, done.stderr.decode()[-1000:]
    assert len(lines) == 1 and "ulimit -v" in lines[0], lines

"""CPython 3.12 built for WASI: a large module nobody here wrote, under the same limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from tests.conftest import REAL, stockade


def test_prints_42_then_runs_from_cache(python_wasm: Path) -> None:
    first = stockade("run", "--json", str(python_wasm), "--", "-c", "print(6*7)", timeout=300)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["stdout"] == "42\n"
    again = stockade("run", str(python_wasm), "--", "-c", "print(6*7)")
    assert (again.returncode, again.stdout) == (0, b"42\n")


def test_in_process_twice(python_wasm: Path) -> None:
    sandbox = Sandbox()
    for _ in range(2):
        result = sandbox.run(python_wasm, Invocation(args=("-c", "import sys; print(sys.version)")))
        assert result.outcome is Outcome.EXITED
        assert result.stdout.startswith(b"3.12")


@pytest.mark.alone  # how soon the deadline stops it, within 10 %: no other test's load
def test_infinite_loop_is_stopped(python_wasm: Path) -> None:
    policy = Policy().with_limits(timeout=1.0, fuel=None)
    result = Sandbox(policy).run(python_wasm, Invocation(args=("-c", "while True: pass")))
    assert result.outcome is Outcome.TIMEOUT
    assert result.usage.wall_ms <= 1100


def test_unbounded_allocation_is_stopped(python_wasm: Path) -> None:
    policy = Policy().with_limits(max_memory=64 * 1024**2)
    code = "x = []\nwhile True: x.append(bytearray(1 << 20))"
    result = Sandbox(policy).run(python_wasm, Invocation(args=("-c", code)))
    assert (result.outcome, result.exit_code) == (Outcome.MEMORY_LIMIT, 137)
    assert result.usage.peak_memory_bytes <= 64 * 1024**2


def test_host_files_are_out_of_reach(python_wasm: Path) -> None:
    code = "open('/etc/passwd').read()"
    result = Sandbox().run(python_wasm, Invocation(args=("-c", code)))
    assert result.guest_exit_code == 1
    assert b"FileNotFoundError" in result.stderr


def test_sockets_fail_inside(python_wasm: Path) -> None:
    code = ("import socket\ntry:\n socket.socket().connect(('127.0.0.1', 22))\n"
            "except OSError as e:\n print('refused', e.errno)")
    result = Sandbox().run(python_wasm, Invocation(args=("-c", code)))
    assert result.outcome is Outcome.EXITED
    assert result.stdout.startswith(b"refused")


def test_output_flood_is_capped(python_wasm: Path) -> None:
    policy = Policy().with_limits(max_output=100_000)
    code = "while True: print('x' * 1000)"
    result = Sandbox(policy).run(python_wasm, Invocation(args=("-c", code)))
    assert result.outcome is Outcome.OUTPUT_LIMIT
    assert len(result.stdout) + len(result.stderr) <= 100_000


def test_a_first_compile_does_not_count_against_the_timeout(tmp_path: Path) -> None:
    # QuickJS (1.4 MB) compiles in most of a second; its script then needs milliseconds.
    quickjs = REAL / "quickjs.wasm"
    if not quickjs.exists():
        pytest.fail(f"{quickjs} missing: run `make real-guests` first")
    fresh = tmp_path / "quickjs.wasm"  # a digest the AoT cache has never seen
    fresh.write_bytes(quickjs.read_bytes() + b"\x00\x05\x04salt")
    policy = Policy.from_profile("strict").with_limits(timeout=0.1)
    with Sandbox(policy) as sandbox:
        result = sandbox.run(fresh, Invocation(args=("-e", "console.log(6*7)")))
    assert result.coldstart
    assert (result.outcome, result.stdout) == (Outcome.EXITED, b"42\n")

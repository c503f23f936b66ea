"""Ctrl-C during an in-process run on wasmtime-py (`Sandbox`): the guest stops and the
caller gets its KeyboardInterrupt, never a `Result` saying "KeyboardInterrupt" nor an
interrupt lost in a host call's ctypes callback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import guest

ROOT = Path(__file__).resolve().parents[2]

# Writes one byte at a time for ever; a failed write ends it with exit code 7.
WRITER = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "x")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1))
    (loop $write
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))
        (then (call $exit (i32.const 7))))
      (br $write))))
"""

CTRL_C = """
import os, signal, sys, threading, time
# Ctrl-C as a terminal delivers it, whatever this process inherited.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from stockade import Invocation, Policy, Sandbox

module, times, args = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:])
policy = Policy.from_profile("default").with_limits(timeout=30.0, max_output="256MiB")
with Sandbox(policy) as sandbox:
    for _ in range(times):
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        began = time.monotonic()
        try:
            result = sandbox.run(module, Invocation(args=args))
            print("returned", result.outcome.value, repr(result.message), flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {time.monotonic() - began:.1f} s", flush=True)
"""


def _interrupted(module: Path, times: int, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", CTRL_C, str(module), str(times), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_ctrl_c_in_a_sleeping_host_call_is_raised_once_the_guest_stops() -> None:
    """It came back as a Result, outcome `error`, "KeyboardInterrupt: ", and the program
    went on."""
    lines = _interrupted(guest("sleeper.wasm"), 1, "20")
    assert len(lines) == 1 and lines[0].startswith("interrupted"), lines
    assert float(lines[0].split()[2]) < 10


@pytest.mark.parametrize("attempt", range(2))
def test_ctrl_c_between_host_calls_is_raised_not_ignored(tmp_path: Path, attempt: int) -> None:
    """Taken at a ctypes callback's entry, the interrupt was printed as "Exception ignored
    on calling ctypes callback function" and the guest saw a failed write (it exited 7)."""
    module = tmp_path / "writer.wat"
    module.write_text(WRITER)
    lines = _interrupted(module, 4)
    assert len(lines) == 4 and all(line.startswith("interrupted") for line in lines), lines
    assert all(float(line.split()[2]) < 10 for line in lines), lines

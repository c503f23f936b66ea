"""Attack: poll_oneoff clocks of 2^64-1 ns (relative, or absolute on the realtime clock).
The owned poll turned them into a `time.sleep` past what the platform takes
(OverflowError) or packed them back as 2^64 ns for wasmtime ('argument out of range'):
the run ended as a usage error (exit 125) or a trap instead of sleeping. Guest clocks
are now clamped and slept in bounded chunks: a huge sleep sleeps, to the deadline when
there is one, on both backends, metered (a directory granted) or not."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox
from tests.conftest import STOCKADE

SLACK_S = 0.5  # "within timeout + 10 %", plus room for a shared, noisy machine
_U64 = (1 << 64) - 1
_SUBSCRIPTION = struct.Struct("<QB7xI4xQQH6x")  # userdata, tag, clock, timeout, precision, flags
_FD_SUBSCRIPTION = struct.Struct("<QB7xI28x")  # userdata, tag, descriptor


def _clock(userdata: int, clock: int = 1, flags: int = 0) -> bytes:
    return _SUBSCRIPTION.pack(userdata, 0, clock, _U64, 0, flags)


def _guest(subscriptions: bytes) -> str:
    """poll_oneoff over `subscriptions`; then errno (1 byte), nevents (1 byte) and the
    first event's userdata (1 byte) on stdout."""
    data = "".join(f"\\{byte:02x}" for byte in subscriptions)
    count = len(subscriptions) // 48
    return f"""(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "{data}")
  (func (export "_start")
    (i32.store8 (i32.const 500)
      (call $poll (i32.const 4096) (i32.const 8192) (i32.const {count}) (i32.const 9000)))
    (i32.store8 (i32.const 501) (i32.load (i32.const 9000)))
    (i32.store8 (i32.const 502) (i32.load (i32.const 8192)))
    (i32.store (i32.const 3000) (i32.const 500)) (i32.store (i32.const 3004) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))))
"""


def _policy(tmp_path: Path, metered: bool, timeout: float | None) -> Policy:
    policy = Policy.from_profile("default").with_limits(timeout=timeout)
    if metered:
        policy = policy.with_capabilities(dirs=(DirGrant(tmp_path, "/d"),))
    return policy


def _run(tmp_path: Path, backend: str, metered: bool, timeout: float | None,
         subscriptions: bytes) -> Result:
    module = tmp_path / "poll.wat"
    module.write_text(_guest(subscriptions))
    policy = _policy(tmp_path, metered, timeout)
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        return sandbox.run(module, Invocation())


BACKENDS = ["wasmtime", "capi"]
_CLOCKS = {"relative": _clock(7), "absolute-realtime": _clock(7, clock=0, flags=1),
           "absolute-monotonic": _clock(7, flags=1)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metered", [True, False])
@pytest.mark.parametrize("clock", sorted(_CLOCKS))
def test_a_huge_clock_sleeps_to_the_deadline(tmp_path: Path, backend: str, metered: bool,
                                             clock: str) -> None:
    result = _run(tmp_path, backend, metered, 0.3, _CLOCKS[clock])
    assert result.outcome is Outcome.TIMEOUT, (result.outcome, result.message)
    assert result.usage.wall_ms <= (0.3 + SLACK_S) * 1000, result.usage.wall_ms


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metered", [True, False])
def test_a_huge_clock_beside_a_ready_descriptor_returns_the_descriptor(
        tmp_path: Path, backend: str, metered: bool) -> None:
    # Standard input (empty) is ready at once: the clock, made a relative wait for
    # wasmtime on a metered run, must not overflow on the way.
    subscriptions = _clock(2) + _FD_SUBSCRIPTION.pack(1, 1, 0)
    result = _run(tmp_path, backend, metered, None, subscriptions)
    assert result.outcome is Outcome.EXITED, (result.outcome, result.message)
    assert result.stdout == b"\0\x01\x01", result.stdout


def test_a_huge_clock_without_a_timeout_just_sleeps(tmp_path: Path) -> None:
    # Each run in its own `stockade run`: still asleep after a second, not failed.
    module = tmp_path / "poll.wat"
    module.write_text(_guest(_clock(7)))
    runs = []
    for backend in BACKENDS:
        for extra in (["--dir", f"{tmp_path}:/d"], ["--profile", "permissive"]):
            env = {**os.environ, "STOCKADE_BACKEND": backend}
            runs.append(subprocess.Popen(
                [*STOCKADE, "run", *extra, "--timeout", "none", str(module)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env))
    try:
        time.sleep(2.0)
        ended = {index: run.poll() for index, run in enumerate(runs)}
    finally:
        for run in runs:
            run.kill()
    for index, run in enumerate(runs):
        stderr = run.communicate()[1]
        assert ended[index] is None, (index, ended[index], stderr)

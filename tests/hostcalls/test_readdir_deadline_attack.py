"""Attack: one `fd_readdir` with a buffer of megabytes on a directory of 64,000 entries,
under a 100 ms timeout. The owned listing stats and hashes every entry in Python
(~1 s here); the meter checked the deadline only before the call, so the run overshot
its timeout by the whole listing. The listing now checks the deadline as it goes and
the guest is stopped with `timeout`, on both backends, within timeout + slack.

A listing within the deadline still returns every entry (no cap on what one call
returns: a short answer tells the guest the directory ended)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox

ENTRIES = 64_000
BUFFER = 8 * 1024**2  # holds the whole listing (~50 bytes an entry)
SLACK_S = 0.5  # "within timeout + 10 %", plus room for a shared, noisy machine

# One fd_readdir of the whole directory from cookie 0 into a buffer at 64 KiB, then
# its errno and bytes used written to stdout (8 bytes).
_GUEST = f"""(module
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $rd (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {BUFFER // 65536 + 2})
  (func (export "_start")
    (i32.store (i32.const 0)
      (call $rd (i32.const 3) (i32.const 65536) (i32.const {BUFFER}) (i64.const 0)
                (i32.const 4)))
    (i32.store (i32.const 8) (i32.const 0)) (i32.store (i32.const 12) (i32.const 8))
    (drop (call $w (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of `ENTRIES` empty files, made once for the module."""
    where = tmp_path_factory.mktemp("big")
    for index in range(ENTRIES):
        (where / f"entry-{index:07d}-padding-name").touch()
    return where


def _run(backend: str, listed: Path, module: Path, timeout: float) -> Result:
    policy = Policy.from_profile("default").with_limits(timeout=timeout).with_capabilities(
        dirs=(DirGrant(listed, "/d"),))
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        return sandbox.run(module, Invocation())


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "readdir_big.wat"
    path.write_text(_GUEST)
    return path


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
def test_a_huge_listing_stops_at_the_deadline(big: Path, module: Path, backend: str) -> None:
    result = _run(backend, big, module, timeout=0.1)
    assert result.outcome is Outcome.TIMEOUT, (result.outcome, result.message)
    assert result.stdout == b""  # stopped inside the call: it never returned
    assert result.usage.wall_ms <= (0.1 + SLACK_S) * 1000, result.usage.wall_ms


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
def test_a_huge_listing_within_the_deadline_returns_every_entry(big: Path, module: Path,
                                                                backend: str) -> None:
    result = _run(backend, big, module, timeout=30.0)
    assert result.outcome is Outcome.EXITED, (result.outcome, result.message)
    errno, used = int.from_bytes(result.stdout[:4], "little"), \
        int.from_bytes(result.stdout[4:], "little")
    name = len("entry-0000000-padding-name")
    assert errno == 0 and used == (ENTRIES * (24 + name) + 2 * 24 + 1 + 2), used

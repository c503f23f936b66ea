"""fd_readdir costs the host work bounded by the guest's buffer, not by the directory:
a guest listing a directory of 50,000 entries with a 32-byte buffer and cookie 0, again
and again, must get as many calls through as on a directory of 10."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest


def _listing(directory: Path) -> Policy:
    return Policy.from_profile("default").with_limits(timeout=10.0).with_capabilities(
        dirs=(DirGrant(directory, "/d"),))


@pytest.mark.xfail(strict=True, reason="fd_readdir is wasmtime's own: it reads the whole "
                   "directory on every call (measured: ~2-5 s and ~120 MiB per call at "
                   "100,000 entries on this machine)")
def test_a_tiny_buffer_on_a_huge_directory_is_cheap(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for index in range(50_000):
        (big / f"f{index}").touch()
    result = Sandbox(_listing(big)).run(guest("readdir_loop.wasm"), Invocation())
    assert result.outcome is Outcome.EXITED, result.message
    assert result.usage.hostcalls["fd_readdir"] == 2000


def test_a_tiny_buffer_on_a_small_directory(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    for index in range(10):
        (small / f"f{index}").touch()
    result = Sandbox(_listing(small)).run(guest("readdir_loop.wasm"), Invocation())
    assert result.outcome is Outcome.EXITED, result.message
    assert result.usage.hostcalls["fd_readdir"] == 2000

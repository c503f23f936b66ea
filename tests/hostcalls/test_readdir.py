"""fd_readdir costs the host work bounded by the guest's buffer, not by the directory:
a guest listing a directory of 50,000 entries with a 32-byte buffer and cookie 0, again
and again, gets its 2,000 calls through within the timeout as on a directory of 10
(wasmtime's own fd_readdir read the whole directory per call: ~2-5 s and ~120 MiB each
at 100,000 entries here). A whole listing by cookies finds every entry once."""

from __future__ import annotations

from pathlib import Path

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest


def _listing(directory: Path) -> Policy:
    return Policy.from_profile("default").with_limits(timeout=10.0).with_capabilities(
        dirs=(DirGrant(directory, "/d"),))


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


def test_a_listing_by_cookies_finds_every_entry_once(tmp_path: Path) -> None:
    listed = tmp_path / "listed"
    listed.mkdir()
    names = {f"entry-{index}-{'x' * (index % 40)}" for index in range(3000)}
    for name in names:
        (listed / name).touch()
    (listed / "sub").mkdir()
    result = Sandbox(_listing(listed)).run(guest("readdir_list.wasm"), Invocation())
    assert result.outcome is Outcome.EXITED, result.message
    lines = result.stdout.decode().splitlines()
    found = lines[:-1]
    assert sorted(found) == sorted({*names, "sub", ".", ".."})
    assert lines[-1] == f"count {len(names) + 3}"

"""fd_readdir costs the host work bounded by the guest's buffer, not by the directory:
a guest listing a directory of 50,000 entries with a 32-byte buffer and cookie 0, again
and again, gets its 2,000 calls through within the timeout as on a directory of 10
(wasmtime's own fd_readdir read the whole directory per call: ~2-5 s and ~120 MiB each
at 100,000 entries here). A whole listing by cookies finds every entry once."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest


def _listing(directory: Path) -> Policy:
    return Policy.from_profile("default").with_limits(timeout=10.0).with_capabilities(
        dirs=(DirGrant(directory, "/d"),))


@pytest.mark.parametrize("entries", [50_000, 10])
def test_a_tiny_buffer_is_cheap_on_any_directory(tmp_path: Path, entries: int) -> None:
    listed = tmp_path / "listed"
    listed.mkdir()
    for index in range(entries):
        (listed / f"f{index}").touch()
    result = Sandbox(_listing(listed)).run(guest("readdir_loop.wasm"), Invocation())
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

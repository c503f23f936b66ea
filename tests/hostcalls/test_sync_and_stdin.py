"""Owned host calls: the sync policy, standard input, counts in usage."""

from __future__ import annotations

from pathlib import Path

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest


def sync_policy(tmp_path: Path, sync: str) -> Policy:
    grant = DirGrant(tmp_path, "/out", writable=True)
    return Policy().with_limits(sync=sync).with_capabilities(dirs=(grant,))


def test_sync_ignored_by_default(tmp_path: Path) -> None:
    result = Sandbox(sync_policy(tmp_path, "ignore")).run(
        guest("syncer.wasm"), Invocation(args=("200",)))
    assert result.outcome is Outcome.EXITED
    assert result.stdout == b"200 syncs\n"
    assert result.usage.hostcalls["fd_sync"] == 200
    assert result.usage.hostcalls["fd_pwrite"] == 200
    assert result.usage.bytes_written == 200


def test_sync_limit_stops_storm(tmp_path: Path) -> None:
    result = Sandbox(sync_policy(tmp_path, "limit:10")).run(
        guest("syncer.wasm"), Invocation(args=("200",)))
    assert (result.outcome, result.exit_code) == (Outcome.HOSTCALL_LIMIT, 153)
    assert result.usage.hostcalls["fd_sync"] == 11


def test_sync_allowed(tmp_path: Path) -> None:
    result = Sandbox(sync_policy(tmp_path, "allow")).run(
        guest("syncer.wasm"), Invocation(args=("5",)))
    assert result.outcome is Outcome.EXITED
    assert (tmp_path / "sync.bin").read_bytes() == b"s"


def test_large_stdin_round_trips() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    result = Sandbox().run(guest("hello.wasm"), Invocation(stdin=payload))
    assert result.stdout.endswith(payload)


def test_per_call_cap(tmp_path: Path) -> None:
    policy = Policy().with_limits(hostcall_caps=(("fd_write", 10),), max_output=1024**3)
    result = Sandbox(policy).run(guest("flood.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.HOSTCALL_LIMIT, 153)
    assert result.usage.hostcalls["fd_write"] == 11
    assert "fd_write" in result.message

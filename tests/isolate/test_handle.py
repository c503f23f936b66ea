"""`WorkerProcess` and what a worker starts with: its environment is an allow-list,
and the AoT cache cap it is handed is the one its sandbox checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Policy
from stockade.engine.cache import MAX_BYTES_ENV
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.handle import worker_environment
from stockade.isolate.plan import plan_for
from tests.conftest import guest


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


def test_a_worker_is_handed_the_cache_cap_its_plan_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "64MiB")
    plan = plan_for(Policy(), IsolationConfig())
    monkeypatch.setenv(MAX_BYTES_ENV, "not a size")  # read again, this would raise
    assert worker_environment(plan)[MAX_BYTES_ENV] == str(64 * 1024**2)


def test_an_isolated_sandboxs_workers_share_its_cache_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker read STOCKADE_CACHE_MAX_BYTES again as it started: a value changed
    since the sandbox checked it gave its workers another cap than its own cache's, and
    a malformed one failed every later start with UsageError."""
    monkeypatch.setenv(MAX_BYTES_ENV, "64MiB")
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        monkeypatch.setenv(MAX_BYTES_ENV, "not a size")
        assert sandbox.run(guest("hello.wasm")).ok
        pid = sandbox.worker_pid
        assert pid is not None
        assert _environ(pid)[MAX_BYTES_ENV] == str(64 * 1024**2)
        resealer = sandbox._resealer  # it copies into its workers' cache: the same cap
        assert resealer is not None and resealer.host.max_bytes == 64 * 1024**2

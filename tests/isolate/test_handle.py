"""`WorkerProcess` and what a worker starts with: its environment is an allow-list,
and the AoT cache cap it is handed is the one its sandbox checked."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from stockade import Policy
from stockade.engine.cache import MAX_BYTES_ENV, AotCache
from stockade.errors import WorkerError
from stockade.isolate import IsolatedSandbox, IsolationConfig, handle
from stockade.isolate.cgroup import CgroupLimits, WorkerCgroup, create_cgroup
from stockade.isolate.handle import WorkerProcess, worker_environment
from stockade.isolate.plan import ISOLATED_SCOPE, plan_for
from stockade.telemetry.envsettings import AUDIT_MAX_BYTES_ENV
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


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("python", "env", "raised"), [
    # Popen refuses the environment before it forks: a ValueError, not an OSError.
    (sys.executable, {"STOCKADE_BROKEN": "a\0b"}, ValueError),
    ("/nonexistent/python", {}, WorkerError),
], ids=["ValueError", "OSError"])
def test_a_worker_that_cannot_start_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str,
        env: dict[str, str], raised: type[Exception]) -> None:
    """What the handle made before the interpreter failed to start (its pipes, stderr
    file, temporary directory and cgroup) is taken back whatever was raised: only an
    OSError was cleaned up, and even then the parent's ends of the pipes stayed open."""
    base = tmp_path / "temp"
    base.mkdir()
    monkeypatch.setattr(handle, "_temp_base", lambda: str(base))
    made: list[Path] = []  # none on a machine without usable cgroups

    def recorded(limits: CgroupLimits) -> WorkerCgroup:
        cgroup = create_cgroup(limits)
        made.extend(cgroup.dirs.values())
        return cgroup

    monkeypatch.setattr(handle, "create_cgroup", recorded)
    plan = plan_for(Policy.from_profile("strict"), IsolationConfig())
    limits = CgroupLimits(memory=256 * 1024**2, cpu_quota=1.0, pids=64)
    before = _open_fds()
    with pytest.raises(raised):
        WorkerProcess(plan, limits, python, env=env)
    assert _open_fds() == before
    assert list(base.iterdir()) == []
    assert not [path for path in made if path.exists()], made


def test_a_worker_out_of_descriptors_leaves_none_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE at the second pipe left the first pipe's worker end open (closed only once
    the interpreter had started), and came out as a bare OSError, not WorkerError."""
    import errno

    base = tmp_path / "temp"
    base.mkdir()
    monkeypatch.setattr(handle, "_temp_base", lambda: str(base))
    pipe = os.pipe
    made: list[int] = []

    def second_fails() -> tuple[int, int]:
        if made:
            raise OSError(errno.EMFILE, "Too many open files")
        ends = pipe()
        made.extend(ends)
        return ends

    plan = plan_for(Policy.from_profile("strict"), IsolationConfig())
    before = _open_fds()
    monkeypatch.setattr(handle.os, "pipe", second_fails)
    with pytest.raises(WorkerError, match="cannot start a worker: Too many open files"):
        WorkerProcess(plan, None, sys.executable)
    monkeypatch.undo()
    assert made, "no pipe was made"
    assert _open_fds() == before
    assert list(base.iterdir()) == []


def test_a_scoped_plan_names_its_cache_without_reading_the_audit_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's scope directory is the one `AotCache.scope` opens, named without
    building a cache per worker: that read and checked the audit settings again, and a
    malformed `STOCKADE_AUDIT_MAX_BYTES` set since failed every worker's start."""
    plan = dataclasses.replace(plan_for(Policy(), IsolationConfig()), cache=tmp_path)
    assert plan.cache_scope == ISOLATED_SCOPE
    expected = AotCache(tmp_path, max_bytes=plan.cache_max_bytes).scope(ISOLATED_SCOPE).root
    monkeypatch.setenv(AUDIT_MAX_BYTES_ENV, "not a size")
    assert handle._scoped(plan).cache == expected

"""The spare worker: a worker whose process keeps the deadline ends itself at a run's
timeout, so a sandbox that serves more than one run keeps one pre-started worker and the
run after a timeout does not wait for a start-up. Never more than one spare, nothing left
behind after close, even while the spare is still starting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.cancel import CANCELLED, CancelToken, cancellable
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.handle import _temp_base
from tests.conftest import guest
from tests.isolate.conftest import gone

TIMEOUT = 0.5
GRACE = 30.0  # the parent's kill stays far away: only the worker's own deadline acts


def _policy() -> Policy:
    return Policy.from_profile("default").with_limits(timeout=TIMEOUT, max_memory="8MiB")


def _config(process_deadline: bool = True) -> IsolationConfig:
    return IsolationConfig(grace=GRACE, process_deadline=process_deadline)


def _children() -> set[int]:
    """This process's direct children, zombies included."""
    found: set[int] = set()
    for path in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            found.update(int(pid) for pid in path.read_text().split())
        except FileNotFoundError:
            continue
    return found


def _temps() -> set[Path]:
    """The workers' temporary directories that exist now."""
    return set(Path(_temp_base()).glob("stockade-worker-*"))


def _fds() -> set[str]:
    return {entry.name for entry in Path("/proc/self/fd").iterdir()}


def test_the_run_after_a_timeout_is_served_by_the_spare() -> None:
    with IsolatedSandbox(_policy(), config=_config()) as sandbox:
        assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.spare_pid is None  # one run so far: a one-shot pays for no spare
        assert sandbox.run(guest("hello.wasm")).ok
        spare = sandbox.spare_pid
        assert spare is not None and spare != sandbox.worker_pid
        spinner = sandbox.worker_pid
        assert spinner is not None
        result = sandbox.run(guest("spin_loop.wasm"))
        assert result.outcome is Outcome.TIMEOUT and result.message == "wall-clock timeout"
        # The spare took over as the worker; a new spare is on its way; the old is reaped.
        assert sandbox.worker_pid == spare
        assert sandbox.spare_pid not in (None, spare, spinner)
        assert gone(spinner)
        assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.worker_pid == spare


def test_never_more_than_one_spare_nor_a_worker_left_behind() -> None:
    before = _children()
    seen: set[int] = set()
    with IsolatedSandbox(_policy(), config=_config()) as sandbox:
        for name in ("hello.wasm", "hello.wasm", "spin_loop.wasm", "spin_loop.wasm",
                     "hello.wasm", "grow_loop.wasm", "hello.wasm"):
            sandbox.run(guest(name))
            live = {pid for pid in _children() - before if not gone(pid)}
            assert len(live) <= 2, f"more than the worker and one spare: {live}"
            seen |= live
            assert sandbox.worker_pid in live
    assert len(seen) >= 4  # three timeouts replaced their workers
    assert all(gone(pid) for pid in seen)
    assert not (_children() - before), "a worker was left unreaped"


def test_closing_while_the_spare_starts_leaves_nothing(tmpdir_env: Path) -> None:
    fds = _fds()
    before = _children()
    temps = _temps()
    assert _temp_base() == str(tmpdir_env.resolve())  # no other test process writes here
    sandbox = IsolatedSandbox(_policy(), config=_config())
    assert sandbox.run(guest("hello.wasm")).ok
    assert sandbox.run(guest("hello.wasm")).ok
    spare = sandbox.spare_pid
    assert spare is not None
    assert not gone(spare)  # closed right away: the spare has not had time to harden
    worker = sandbox.worker_pid
    sandbox.close()
    sandbox.close()  # twice is safe
    assert sandbox.spare_pid is None and sandbox.worker_pid is None
    assert worker is not None and gone(worker) and gone(spare)
    assert not (_children() - before)
    assert _fds() <= fds, "a pipe or file of a worker was left open"
    assert _temps() <= temps, "a worker's temporary directory was left behind"


def test_a_worker_that_keeps_epochs_keeps_no_spare() -> None:
    with IsolatedSandbox(_policy(), config=_config(process_deadline=False)) as sandbox:
        for _ in range(3):
            assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.spare_pid is None
        result = sandbox.run(guest("spin_loop.wasm"))
        assert result.outcome is Outcome.TIMEOUT
        assert sandbox.spare_pid is None


def test_a_sandbox_told_to_keep_no_spare_keeps_none() -> None:
    config = IsolationConfig(grace=GRACE, spare_worker=False)
    with IsolatedSandbox(_policy(), config=config) as sandbox:
        for _ in range(3):
            assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.spare_pid is None


def test_a_retiring_workers_discard_keeps_the_spare_promoted_in_its_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose CPU budget is spent answers `retire`; a cancellation landing as
    that answer is read has the run's clean-up discard it already, promoting the spare.
    Discarding the retired worker again must not kill that spare, now the current
    worker, and start yet another in its place."""
    from stockade.isolate import process

    collect = process.IsolatedSandbox._collect
    token = CancelToken()  # each run's own, below
    retired: list[tuple[int, int]] = []  # (the retired worker, the spare then)

    def cancelled_as_it_retires(self: Any, worker: Any, *args: Any, **kwargs: Any) -> Any:
        outcome = collect(self, worker, *args, **kwargs)
        if outcome is process._RETIRE and self.spare_pid is not None:
            retired.append((worker.pid, self.spare_pid))
            token.cancel()
        return outcome

    monkeypatch.setattr(process.IsolatedSandbox, "_collect", cancelled_as_it_retires)
    # One request's CPU budget (RLIMIT_CPU) per worker, whole seconds: a second of
    # spinning spends what is left of it, and the worker retires at its next request.
    config = IsolationConfig(grace=GRACE, cpu_budget_runs=1)
    policy = Policy.from_profile("default").with_limits(timeout=20.0, max_memory="8MiB")
    with IsolatedSandbox(policy, config=config) as sandbox:
        for _ in range(200):
            token = CancelToken()
            with cancellable(token):
                result = sandbox.run(guest("spin.wasm"), Invocation(args=("50000000",)))
            if retired:
                break
            assert result.ok, result.message
        else:
            pytest.fail("no worker retired while a spare was kept")
        old, spare = retired[-1]
        assert result.outcome is Outcome.ERROR and result.message == CANCELLED.message
        assert gone(old)
        assert sandbox.worker_pid == spare, "the promoted spare was discarded too"
        assert not gone(spare)
        assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.worker_pid == spare

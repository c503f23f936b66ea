"""Workers that die, hang or are closed: the caller gets a Result and goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, ModuleError, Outcome, Policy, UsageError, WorkerError
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.observe import RunInfo
from stockade.result import Result
from tests.conftest import guest
from tests.isolate.conftest import gone, stop_after_reading, wait_for_state


class SignalOnStart:
    """An observer sending `sig` to the worker as soon as its guest starts."""

    def __init__(self, sig: signal.Signals) -> None:
        self.sig = sig
        self.finished: list[Result] = []

    def run_started(self, info: RunInfo) -> None:
        os.kill(info.pid, self.sig)

    def run_finished(self, info: RunInfo, result: Result) -> None:
        self.finished.append(result)


def test_worker_killed_by_sigkill_gives_error_and_is_replaced() -> None:
    killer = SignalOnStart(signal.SIGKILL)
    with IsolatedSandbox(Policy.from_profile("strict"), observers=[killer]) as sandbox:
        result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("10",)))
        assert result.outcome is Outcome.ERROR
        assert "SIGKILL" in result.message
        assert result.module == "sleeper.wasm" and result.sha256
        assert killer.finished == [result]
        sandbox.observers = ()
        assert sandbox.run(guest("hello.wasm")).ok


def _slow_to_compile(tmp_path: Path, functions: int = 40_000) -> Path:
    """A module of many functions, new to the AoT cache: compiling it takes seconds."""
    body = "".join(f"(func $f{i} (result i32) (i32.add (i32.const {i}) (i32.const 1)))"
                   for i in range(functions))
    nonce = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    module = tmp_path / "slow.wat"
    module.write_text(f'(module (global i32 (i32.const {nonce})) {body} '
                      '(func (export "_start")))')
    return module


def test_a_worker_stopped_during_a_run_is_a_worker_failure_not_a_timeout() -> None:
    """A SIGSTOP while the guest ran was reported as the guest's `timeout` (124), after
    the whole timeout and grace: the worker's failure is `error`, found in `grace`."""
    policy = Policy.from_profile("strict").with_limits(timeout=20.0)
    stopper = SignalOnStart(signal.SIGSTOP)
    config = IsolationConfig(grace=1.0)
    with IsolatedSandbox(policy, observers=[stopper], config=config) as sandbox:
        began = time.monotonic()
        result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("10",)))
        waited = time.monotonic() - began
        assert result.outcome is Outcome.ERROR and result.exit_code == Outcome.ERROR.exit_code
        assert "stopped" in result.message and "SIGKILL" in result.message
        assert waited < 10, waited  # far from the 20 s timeout + grace
        sandbox.observers = ()
        assert sandbox.run(guest("hello.wasm")).ok


def test_an_idle_stopped_worker_does_not_cost_the_next_run() -> None:
    """A worker stopped between runs made the next run wait the whole load timeout
    (36 s under a 3 s policy) and reported "loading the module took longer", `timeout`:
    a stopped worker is replaced before it is handed the run."""
    policy = Policy.from_profile("strict").with_limits(timeout=3.0)
    with IsolatedSandbox(policy) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        wait_for_state(pid, "T")  # a signal takes effect after `kill` returns
        began = time.monotonic()
        result = sandbox.run(guest("hello.wasm"))
        assert result.ok, result.message
        assert time.monotonic() - began < 3 + 2
        assert sandbox.worker_pid != pid
        gone_by = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}"), "the stopped worker was left behind"


def test_a_worker_stopped_while_loading_is_a_worker_failure(tmp_path: Path) -> None:
    """Stopped after it was handed the run, before the guest started: not the guest's
    `timeout` after the whole load timeout, but `error` about as soon as it is seen."""
    policy = Policy.from_profile("strict").with_limits(timeout=3.0)
    module = _slow_to_compile(tmp_path)
    with IsolatedSandbox(policy, config=IsolationConfig(grace=1.0)) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert pid is not None
        threading.Timer(0.3, os.kill, (pid, signal.SIGSTOP)).start()
        began = time.monotonic()
        result = sandbox.run(module)
        waited = time.monotonic() - began
        assert result.outcome is Outcome.ERROR, result.message
        assert "stopped" in result.message
        assert waited < 3 + 1 + 2, waited
        assert sandbox.run(guest("hello.wasm")).ok


def _run_stopped_mid_request(sandbox: IsolatedSandbox, code: str, stdin: bytes) -> tuple[
        int, threading.Thread, threading.Thread, list[Result]]:
    """Start, on a thread, a run of exitcode.wasm exiting `code` with `stdin` (far more
    than the pipe holds), its worker SIGSTOPped once it has read 4 MiB of the request:
    (the worker's pid, the stopping thread, the running one, where its result goes)."""
    sandbox.protections()
    pid = sandbox.worker_pid
    assert pid is not None
    watcher = stop_after_reading(pid, 4 * 1024**2)
    results: list[Result] = []
    runner = threading.Thread(target=lambda: results.append(sandbox.run(
        guest("exitcode.wasm"), Invocation(args=(code,), stdin=stdin))), daemon=True)
    runner.start()
    return pid, watcher, runner, results


def test_a_worker_stopped_while_its_request_is_written_is_a_worker_failure() -> None:
    """Stopped while its standard input was being written to it: the write blocked
    for ever (the stopped-worker check ran only while a reply was awaited), and the
    caller with it. It is `error` about as soon as it is seen, as a worker stopped
    while its reply is awaited, and that worker is never handed another run."""
    policy = Policy.from_profile("default").with_limits(timeout=20.0)
    stdin = bytes(64 * 1024**2)  # far more than the pipe holds: the parent is writing
    with IsolatedSandbox(policy, config=IsolationConfig(grace=1.0)) as sandbox:
        sandbox.protections()  # the worker ready: the wait below is the run's alone
        began = time.monotonic()
        pid, watcher, runner, results = _run_stopped_mid_request(sandbox, "0", stdin)
        runner.join(20)
        waited = time.monotonic() - began
        watcher.join(1)
        if runner.is_alive():  # let the stuck caller go before failing
            os.kill(pid, signal.SIGKILL)
            runner.join(20)
            pytest.fail(f"the run was still writing to the stopped worker after {waited:.0f} s")
        result = results[0]
        assert result.outcome is Outcome.ERROR, result.message
        assert "stopped" in result.message and "SIGKILL" in result.message, result.message
        assert waited < 1 + 4, waited
        assert sandbox.worker_pid != pid
        gone_by = time.monotonic() + 5
        while not gone(pid) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert gone(pid), "the stopped worker was left behind"
        assert sandbox.run(guest("hello.wasm"), Invocation(stdin=b"after\n")).ok


def test_load_timeout_bounds_the_time_before_the_guest_starts(tmp_path: Path) -> None:
    config = IsolationConfig(load_timeout=0.5)
    with IsolatedSandbox(Policy.from_profile("strict"), config=config) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        result = sandbox.run(_slow_to_compile(tmp_path))
        assert result.outcome is Outcome.TIMEOUT
        assert "loading the module" in result.message
        assert sandbox.worker_pid != pid


def test_worker_is_reused_across_runs() -> None:
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        first = sandbox.run(guest("hello.wasm"))
        pid = sandbox.worker_pid
        second = sandbox.run(guest("hello.wasm"), Invocation(args=("again",)))
        assert first.ok and second.ok
        assert sandbox.worker_pid == pid
        assert not second.coldstart


def test_max_runs_replaces_the_worker() -> None:
    config = IsolationConfig(max_runs=1)
    with IsolatedSandbox(Policy.from_profile("strict"), config=config) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.worker_pid != pid


def test_close_is_idempotent_and_final() -> None:
    sandbox = IsolatedSandbox(Policy.from_profile("strict"))
    sandbox.protections()
    pid = sandbox.worker_pid
    assert pid is not None
    sandbox.close()
    sandbox.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(UsageError, match="closed"):  # as for `Sandbox` (README)
        sandbox.run(guest("hello.wasm"))


def test_a_missing_interpreter_is_a_worker_error() -> None:
    config = IsolationConfig(python="/nonexistent/python3")
    with IsolatedSandbox(Policy.from_profile("strict"), config=config) as sandbox:
        with pytest.raises(WorkerError, match="cannot start a worker"):
            sandbox.run(guest("hello.wasm"))


@pytest.mark.parametrize(("sig", "outcome", "words"), [
    # The kernel's signal at the worker's CPU-time limit: a limit the run hit, as the
    # deadline it backs up (a breaker and the audit log count it).
    (signal.SIGXCPU, Outcome.TIMEOUT, "CPU time limit (RLIMIT_CPU, SIGXCPU)"),
    # Any other death is the host's failure, not a verdict on the guest.
    (signal.SIGABRT, Outcome.ERROR, "the worker crashed (SIGABRT)"),
])
def test_how_a_worker_died_is_the_runs_outcome(sig: signal.Signals, outcome: Outcome,
                                               words: str) -> None:
    with IsolatedSandbox(Policy.from_profile("strict"),
                         observers=[SignalOnStart(sig)]) as sandbox:
        result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("10",)))
        assert result.outcome is outcome and result.exit_code == outcome.exit_code
        assert words in result.message
        sandbox.observers = ()
        assert sandbox.run(guest("hello.wasm")).ok  # a fresh worker serves the next run


def test_a_killed_runs_scratch_directory_is_removed() -> None:
    killer = SignalOnStart(signal.SIGKILL)
    seen: list[RunInfo] = []

    class Watch(SignalOnStart):
        def run_started(self, info: RunInfo) -> None:
            seen.append(info)

    policy = Policy.from_profile("default").with_capabilities(scratch="/scratch")
    with IsolatedSandbox(policy, observers=[Watch(signal.SIGKILL), killer]) as sandbox:
        result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("10",)))
    assert result.outcome is Outcome.ERROR
    scratch = [path for path in seen[0].writable_dirs if path.name.startswith("stockade-scratch")]
    assert scratch and not scratch[0].exists()


SLEEPER = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\01\\00\\00\\00")
  (data (i32.const 24) "\\00\\b0\\8e\\f0\\1b\\00\\00\\00")
  (func (export "_start")
    (drop (call $poll (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 2048)))))
"""


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            found += [int(child) for child in listing.read().split()]
    return found


def test_a_worker_dies_with_a_killed_caller_after_dropping_its_uid(tmp_path: Path) -> None:
    """`stockade run --isolate process` killed while its guest sleeps (no timeout): the
    worker, tied to it by a parent-death signal, must die too. Switching to its own uid
    cleared that signal (prctl(2)), and the worker slept on under init (found by review:
    a guest's 2**64 ns poll under `--timeout none`)."""
    import subprocess
    import sys
    import time

    module = tmp_path / "sleeper.wat"
    module.write_text(SLEEPER)
    cli = subprocess.Popen([sys.executable, "-m", "stockade", "run", "--isolate", "process",
                            "--timeout", "none", "--stdin", "none", str(module)],
                           stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while worker is None and time.monotonic() < deadline and cli.poll() is None:
            workers = _children(cli.pid)
            worker = workers[0] if workers else None
            time.sleep(0.1)
        assert worker is not None, "the worker did not start"
        time.sleep(2.0)  # confined and sleeping in the guest by now
        cli.kill()
        cli.wait()
        gone_by = time.monotonic() + 10
        while time.monotonic() < gone_by and os.path.exists(f"/proc/{worker}"):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{worker}"), "the worker outlived its caller"
    finally:
        cli.kill()
        if worker is not None and os.path.exists(f"/proc/{worker}"):
            os.kill(worker, signal.SIGKILL)


def test_a_request_written_past_the_load_timeout_is_not_the_guests_timeout() -> None:
    # Writing the request counts as loading; a worker that takes it slowly (a large
    # standard input on a slow host) is the host's failure: `timeout` is the guest's,
    # which breakers count.
    policy = Policy.from_profile("default").with_limits(timeout=20.0)
    config = IsolationConfig(load_timeout=0.01)
    with IsolatedSandbox(policy, config=config) as sandbox:
        sandbox.protections()
        result = sandbox.run(guest("exitcode.wasm"),
                             Invocation(args=("0",), stdin=bytes(256 * 1024**2)))
    if result.outcome is Outcome.EXITED:
        pytest.skip("this machine wrote 256 MiB to the worker within 10 ms")
    assert result.outcome is Outcome.ERROR, result.message
    assert "whole request" in result.message, result.message


def test_interrupt_while_the_request_is_written_ends_that_run() -> None:
    """`interrupt()` promises the run in progress ends as `error`: a worker it killed
    while its request was being written was taken for one that died before its run,
    and the run was quietly handed to a fresh worker."""
    policy = Policy.from_profile("default").with_limits(timeout=20.0)
    with IsolatedSandbox(policy, config=IsolationConfig(grace=30.0)) as sandbox:
        pid, watcher, runner, results = _run_stopped_mid_request(
            sandbox, "7", bytes(64 * 1024**2))
        watcher.join(20)
        wait_for_state(pid, "T")  # stopped partway through its request
        sandbox.interrupt()
        runner.join(20)
        assert not runner.is_alive()
        assert results[0].outcome is Outcome.ERROR, results[0].message


def test_a_module_file_is_closed_when_the_request_cannot_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C while a module's copy is hashed for the worker's cache (or a deleted working
    # directory) left the module's descriptor open, one a run.
    from stockade.isolate import reseal

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(reseal.Resealer, "prepare", interrupted)
    with IsolatedSandbox(Policy.from_profile("default")) as sandbox:
        if sandbox._resealer is None:
            pytest.skip("this sandbox's workers share the caller's cache: nothing to hash")
        counts = []
        for index in range(6):
            module = tmp_path / f"m{index}.wasm"
            module.write_bytes(guest("hello.wasm").read_bytes())
            with pytest.raises(KeyboardInterrupt):
                sandbox.run(module)
            counts.append(len(os.listdir("/proc/self/fd")))
        assert counts[-1] <= counts[1], counts  # the first may start a spare worker


def _run_on_thread(sandbox: IsolatedSandbox, module: Path) -> object:
    """What `sandbox.run(module)` gives (a Result or the exception), from a thread that
    must be done within 20 s: a run that hangs holds the sandbox for ever."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(sandbox.run(module))
        except Exception as exc:  # noqa: BLE001 - what the caller sees is the point
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the run hung on a live worker"
    return outcome[0]


def test_a_module_that_cannot_be_read_as_it_is_sent_fails_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error on the module file while it was sent (a disk, NFS or FUSE error) was
    taken for the worker's death: the run waited for ever on a live worker, holding the
    sandbox, and `interrupt()` then had it retried elsewhere (found by review). Then it
    reached the caller as a bare OSError (a traceback, exit 125 at the command line):
    it is the in-process sandbox's ModuleError, naming the file (126)."""
    import errno

    failures = [OSError(errno.EIO, "Input/output error")]
    sendfile = os.sendfile

    def failing(*args: Any) -> int:
        if failures:
            raise failures.pop()
        return sendfile(*args)

    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert pid is not None
        monkeypatch.setattr(os, "sendfile", failing)
        error = _run_on_thread(sandbox, guest("hello.wasm"))
        assert isinstance(error, ModuleError), error
        assert error.exit_code == 126
        assert error.message == f"{guest('hello.wasm')}: cannot read: Input/output error"
        assert gone(pid), "the worker handed part of a request lives on"
        assert sandbox.run(guest("hello.wasm")).ok  # the sandbox serves the next run


def test_a_module_that_shrinks_as_it_is_sent_fails_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module file cut short while it was sent (another process rewriting it) was
    padded with zeros up to the size it had when opened, and the worker compiled that:
    the caller learnt of an invalid module, not of a file that changed under it."""
    module = tmp_path / "shrinking.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    sendfile = os.sendfile
    cut: list[int] = []

    def truncated_first(out: int, source: int, offset: int, count: int) -> int:
        if not cut:
            cut.append(module.stat().st_size)
            os.truncate(module, 100)
        return sendfile(out, source, offset, count)

    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert pid is not None
        monkeypatch.setattr(os, "sendfile", truncated_first)
        error = _run_on_thread(sandbox, module)
        assert cut, "the module was not sent from its file"
        assert isinstance(error, ModuleError), error
        assert error.exit_code == 126
        assert error.message == (f"{module}: it shrank to 100 bytes as it was read (it "
                                 f"held {cut[0]} when it was opened)")
        assert gone(pid), "the worker handed part of a request lives on"
        monkeypatch.undo()
        module.write_bytes(guest("hello.wasm").read_bytes())
        assert sandbox.run(module).ok


def test_interrupt_while_the_worker_starts_ends_that_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`interrupt()` while the run's worker was starting raised WorkerError ("the worker
    failed to start: ... killed") where it promises a Result with outcome `error`, as at
    any other moment of the run; the next run starts a fresh worker."""
    from stockade.isolate import handle

    wait_ready = handle.WorkerProcess.wait_ready
    starting: list[int] = []

    def interrupted(worker: Any, *args: Any) -> Any:
        if not starting and worker.protections is None:
            starting.append(worker.pid)
            sandbox.interrupt()  # it kills the worker the run waits for
        return wait_ready(worker, *args)

    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        monkeypatch.setattr(handle.WorkerProcess, "wait_ready", interrupted)
        result = sandbox.run(guest("hello.wasm"))
        assert starting, "no worker started for the run"
        assert result.outcome is Outcome.ERROR, result.message
        assert result.exit_code == Outcome.ERROR.exit_code
        assert "interrupt" in result.message, result.message
        assert gone(starting[0])
        monkeypatch.undo()
        after = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert after.ok and b"arg 1: next" in after.stdout
        assert sandbox.worker_pid != starting[0]


def test_interrupt_while_the_run_moves_to_another_worker_ends_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`interrupt()` reached no worker while a run moved from a lost one to the next
    (none current yet), and the run went on there and exited (found by review)."""
    from stockade.isolate import process

    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        sandbox.protections()
        send, start = process._Request.send, process.IsolatedSandbox._start
        killed: list[bool] = []

        def lost(request: Any, worker: Any, *args: Any) -> None:
            if not killed:  # the worker dies before it takes the run
                killed.append(True)
                worker.kill()
            send(request, worker, *args)

        def interrupted_first(self: Any, *args: Any) -> Any:
            if killed and len(killed) == 1:
                killed.append(True)
                self.interrupt()  # no current worker to kill now
            return start(self, *args)

        monkeypatch.setattr(process._Request, "send", lost)
        monkeypatch.setattr(process.IsolatedSandbox, "_start", interrupted_first)
        result = sandbox.run(guest("exitcode.wasm"), Invocation(args=("0",)))
    assert len(killed) == 2, "the run was not moved to another worker"
    assert result.outcome is Outcome.ERROR, result.message

"""Ctrl-C (or any exception) while an isolated run waits for its worker: the worker is
killed and the next run is served by a fresh one, never handed the interrupted run's
reply."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stockade import Invocation, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.observe import RunInfo
from stockade.result import Result
from tests.conftest import guest
from tests.isolate.conftest import gone, stop_after_reading, wait_for_state

ROOT = Path(__file__).resolve().parents[2]

CTRL_C = """
import os, signal, sys, threading
# Ctrl-C as a terminal delivers it, whatever this process inherited.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from stockade import Invocation, Policy
from stockade.isolate import IsolatedSandbox

sleeper, hello = sys.argv[1:3]
with IsolatedSandbox(Policy.from_profile("strict").with_limits(timeout=20.0)) as sandbox:
    assert sandbox.run(hello).ok
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        sandbox.run(sleeper, Invocation(args=("3",)))
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
    for word in ("second", "third"):
        result = sandbox.run(hello, Invocation(args=(word,)))
        print(result.outcome.value, repr(result.stdout))
"""


def test_ctrl_c_while_waiting_does_not_hand_the_reply_to_the_next_run() -> None:
    """Ctrl-C during `IsolatedSandbox.run` left the worker running and the pipe out of
    step: each later run read the reply of the one before, stdout included."""
    done = subprocess.run([sys.executable, "-c", CTRL_C, str(guest("sleeper.wasm")),
                           str(guest("hello.wasm"))], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "interrupted", done.stdout
    assert lines[1].startswith("exited") and "arg 1: second" in lines[1], done.stdout
    assert lines[2].startswith("exited") and "arg 1: third" in lines[2], done.stdout
    assert "sleeping" not in done.stdout


class _RaisesOnStart:
    """An observer raising `error` as the guest starts: the parent is then between the
    request and its reply, as at a Ctrl-C."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.pid: int | None = None

    def run_started(self, info: RunInfo) -> None:
        self.pid = info.pid
        raise self.error

    def run_finished(self, info: RunInfo, result: Result) -> None:
        pass


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_an_exception_while_waiting_discards_the_worker(error: BaseException) -> None:
    raiser = _RaisesOnStart(error)
    policy = Policy.from_profile("strict").with_limits(timeout=20.0)
    with IsolatedSandbox(policy, observers=[raiser]) as sandbox:
        with pytest.raises(type(error)):
            sandbox.run(guest("sleeper.wasm"), Invocation(args=("3",)))
        assert raiser.pid is not None
        assert not os.path.exists(f"/proc/{raiser.pid}"), "the interrupted worker lives on"
        sandbox.observers = ()
        result = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert result.ok and b"arg 1: next" in result.stdout and b"sleeping" not in result.stdout
        assert sandbox.worker_pid != raiser.pid


# A worker stopped partway through taking its request, under a grace long enough that
# only the interruption can end the run in time.
CTRL_C_WHILE_SENDING = """
import os, signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from stockade import Invocation, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from tests.isolate.conftest import stop_after_reading, wait_for_state

exitcode, hello = sys.argv[1:3]
config = IsolationConfig(grace=60.0)
with IsolatedSandbox(Policy.from_profile("default"), config=config) as sandbox:
    sandbox.protections()
    pid = sandbox.worker_pid
    stop_after_reading(pid, 4 * 1024**2)
    def interrupt():
        wait_for_state(pid, "T")
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        sandbox.run(exitcode, Invocation(args=("0",), stdin=bytes(64 * 1024**2)))
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
    print("stopped worker gone" if not os.path.exists(f"/proc/{pid}") else "stopped worker left")
    result = sandbox.run(hello, Invocation(args=("next",)))
    print(result.outcome.value, repr(result.stdout))
"""


def test_ctrl_c_while_the_request_is_written_to_a_stopped_worker() -> None:
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_SENDING,
                           str(guest("exitcode.wasm")), str(guest("hello.wasm"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:2] == ["interrupted", "stopped worker gone"], done.stdout
    assert lines[2].startswith("exited") and "arg 1: next" in lines[2], done.stdout


def test_cancelling_a_run_stops_a_worker_stopped_while_taking_its_request() -> None:
    """A cancelled `run_async` whose worker was stopped while its standard input was
    written: the token's hook was attached only once the request was sent, so the
    cancellation reached nothing, and the run's thread (and the sandbox's lock) stayed
    in the write for ever. The worker is killed at once and the sandbox serves on."""
    config = IsolationConfig(grace=60.0)  # the stopped-worker check is not what ends it
    with IsolatedSandbox(Policy.from_profile("default"), config=config) as sandbox:
        sandbox.protections()
        pid = sandbox.worker_pid
        assert pid is not None
        stop_after_reading(pid, 4 * 1024**2)

        async def cancel_while_sending() -> float:
            task = asyncio.create_task(sandbox.run_async(
                guest("exitcode.wasm"), Invocation(args=("0",), stdin=bytes(64 * 1024**2))))
            await asyncio.to_thread(wait_for_state, pid, "T")
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The run's own thread must be done too: the stopped worker killed, not left
            # for whoever next finds it (bounded, then freed so the loop can end).
            while not gone(pid) and time.monotonic() - began < 10:
                await asyncio.sleep(0.05)
            stopped_for = time.monotonic() - began
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
            return stopped_for

        stopped_for = asyncio.run(cancel_while_sending())
        assert stopped_for < 3, f"the stopped worker outlived its cancellation {stopped_for:.1f} s"
        began = time.monotonic()
        result = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert result.ok and b"arg 1: next" in result.stdout
        assert time.monotonic() - began < 10
        assert sandbox.worker_pid != pid

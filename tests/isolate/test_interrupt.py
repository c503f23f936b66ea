"""Ctrl-C (or any exception) while an isolated run waits for its worker: the worker is
killed and the next run is served by a fresh one, never handed the interrupted run's
reply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stockade import Invocation, Policy
from stockade.isolate import IsolatedSandbox
from stockade.observe import RunInfo
from stockade.result import Result
from tests.conftest import guest

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

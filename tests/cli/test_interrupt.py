"""Ctrl-C during `stockade run`: the guest stops now and the command says it was
interrupted (exit 130), whatever the guest is doing. A guest in a C call keeps the main
thread from Python's signal handler: a spinning guest ran on to its timeout (a minute by
default), and one asleep in `poll_oneoff` was reported as a host failure (a trap, 134)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import STOCKADE, guest

# Far below the runs' own bounds (the default 60 s timeout, a 300 s sleep).
STOP_BOUND = 15.0


def _restore_sigint() -> None:
    # Ctrl-C as a terminal delivers it, whatever the test runner's children inherit.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.parametrize("flags", [[], ["--isolate", "none"], ["--dir", "{tmp}:/data:rw"],
                                   ["--isolate", "process"]],
                         ids=["default", "in-process", "metered", "isolated"])
@pytest.mark.parametrize("workload", [["spin.wasm"], ["sleeper.wasm", "300"]],
                         ids=["spinning", "sleeping"])
@pytest.mark.parametrize("presses", [1, 3])
def test_ctrl_c_stops_the_guest_now(flags: list[str], workload: list[str], presses: int,
                                    tmp_path: Path) -> None:
    """Pressed again while the first is handled (a KeyboardInterrupt raised inside a
    host call's callback escaped it and crashed the process), the answer is the same."""
    command = [*STOCKADE, "run", *[flag.format(tmp=tmp_path) for flag in flags],
               str(guest(workload[0])), *workload[1:]]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_restore_sigint)
    try:
        time.sleep(2.0)  # started, and in the guest
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
        _, stderr = proc.communicate(timeout=STOP_BOUND + 30)
        waited = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert waited < STOP_BOUND
    assert proc.returncode == 130, stderr
    assert stderr.decode().strip().splitlines()[-1] == "stockade: interrupted"


def test_other_signals_still_reach_an_event_loop_during_a_run() -> None:
    """`interrupt_cancels` takes the wakeup descriptor an event loop set for its signal
    handlers: every signal read there is passed on, so none is lost to the loop."""
    import asyncio
    import os

    from stockade.cancel import interrupt_cancels

    got: list[str] = []
    # Python's own handler, also when this runs where SIGINT is ignored (a background job).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    loop = asyncio.new_event_loop()  # not asyncio.run: SIGINT keeps Python's handler
    loop.add_signal_handler(signal.SIGHUP, lambda: got.append("HUP"))

    async def main() -> None:
        with interrupt_cancels() as token:
            assert token is not None
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.3)  # as a run would: the loop does not turn meanwhile
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.05)

    try:
        loop.run_until_complete(main())
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.close()
        signal.signal(signal.SIGINT, previous)
    assert got == ["HUP"]


def test_an_interrupt_noted_in_the_block_is_never_lost() -> None:
    """Ctrl-C noted during a run that then raises (its own error, or one the cancellation
    caused) is still the interrupt; nothing of the set-up outlives the block."""
    import os

    from stockade.cancel import interrupt_cancels

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        descriptors = len(os.listdir("/proc/self/fd"))
        with pytest.raises(KeyboardInterrupt) as raised, interrupt_cancels() as token:
            assert token is not None
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # noted, not raised: the run goes on to its end
            assert token.cancelled
            raise ValueError("the run failed as it was stopped")
        assert isinstance(raised.value.__cause__, ValueError)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        time.sleep(0.1)  # the watcher closes its end of the pipe as it ends
        assert len(os.listdir("/proc/self/fd")) == descriptors
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("flags", [[], ["--dir", "{tmp}:/data:rw"], ["--json"]],
                         ids=["default", "metered", "json"])
def test_what_the_guest_wrote_before_ctrl_c_is_shown(flags: list[str], tmp_path: Path) -> None:
    """A guest that wrote a line and then spins: Ctrl-C stops it, and the line is not
    lost with it (as it is not when its timeout stops it)."""
    command = [*STOCKADE, "run", "--isolate", "none",
               *[flag.format(tmp=tmp_path) for flag in flags], str(guest("chatter_spin.wasm"))]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_restore_sigint)
    try:
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=STOP_BOUND + 30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.decode().strip().splitlines()[-1] == "stockade: interrupted"
    if "--json" in flags:
        import json

        shown = json.loads(stdout)
        assert shown["stdout"].startswith("partial") and shown["outcome"] == "error", shown
        assert shown["exit_code"] == 130, shown  # the command's, as it exits (was 125)
    else:
        assert stdout.startswith(b"partial"), (stdout, stderr)
        assert b"err" in stderr and b"[exit 130" in stderr, stderr



@pytest.mark.parametrize("stop", [True, False])
def test_a_stopping_command_leaves_ctrl_c_ignored(stop: bool) -> None:
    """Python's handler, given back as the run's block ended, let a Ctrl-C arriving while
    `stockade run` stopped raise there (before the command ignored it): the process
    ended by SIGINT (-2), about once in ten runs of three presses 10 ms apart under
    load. A command's block (`stop`) leaves SIGINT ignored once it was interrupted; a
    library caller's gets Python's handler back."""
    script = f"""
import os, signal, time
from stockade.cancel import interrupt_cancels
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    with interrupt_cancels(stop={stop}) as token:
        assert token is not None
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)  # the watcher cancels the token; nothing raises here
        assert token.cancelled
except KeyboardInterrupt:
    print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          preexec_fn=_restore_sigint)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(stop)


@pytest.mark.parametrize("flags", [["--dir", "{tmp}:/data:rw"], ["--isolate", "process"]],
                         ids=["metered", "isolated"])
def test_ctrl_c_just_after_the_run_never_ends_the_command_by_sigint(
        flags: list[str], tmp_path: Path) -> None:
    """The interpreter gives SIGINT its default action back as it finalizes: a Ctrl-C
    pressed just after the run ended the command by SIGINT (-2), the run's exit code
    lost and nothing said, in 9 of 10 such runs (found by review)."""
    command = [*STOCKADE, "run", *[flag.format(tmp=tmp_path) for flag in flags],
               str(guest("hello.wasm"))]
    for delay in (0.0, 0.002, 0.005, 0.01, 0.015, 0.02):
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=_restore_sigint)
        try:
            assert proc.stdout is not None
            proc.stdout.read(1)  # the run is over: its output is being written
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=STOP_BOUND + 30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode in (0, 130), (delay, proc.returncode, stderr)
        assert b"Traceback" not in stderr, stderr

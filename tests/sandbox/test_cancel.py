"""Cancelling an in-process asyncio run stops its guest, frees its slot and says so.

The guest is `spin.wasm`, a CPU loop that never calls the host, under a 60 s timeout and
no fuel: only the cancellation can stop it within the tests' bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from stockade import AsyncSandbox, Invocation, Outcome, Policy, Sandbox, SandboxPool
from stockade.engine import EngineConfig, get_engine
from stockade.observe import RunInfo
from stockade.result import Result
from tests.conftest import guest

# Generous containment bound on a noisy 2-core machine: far below the 60 s timeout.
STOP_BOUND = 15.0
SPIN_POLICY = Policy().with_limits(timeout="60s", fuel=None)


class Recorder:
    """Keeps every finished run's result (called on the guest's thread)."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.finished = threading.Event()

    def run_started(self, info: RunInfo) -> None:
        pass

    def run_finished(self, info: RunInfo, result: Result) -> None:
        self.results.append(result)
        self.finished.set()


async def cancelled_after_a_second(run: Coroutine[Any, Any, Result]) -> float:
    """Start `run` as a task, cancel it a second later (still running), and return the
    seconds from the cancellation until the task ended with CancelledError."""
    task = asyncio.create_task(run)
    await asyncio.sleep(1.0)
    assert not task.done()
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - began


def test_cancelling_the_task_stops_an_in_process_guest() -> None:
    recorder = Recorder()

    async def main() -> tuple[float, Result]:
        sandbox = AsyncSandbox(sandbox=Sandbox(SPIN_POLICY, observers=[recorder]))
        async with sandbox:
            waited = await cancelled_after_a_second(sandbox.run(guest("spin.wasm")))
            # The guest's run has ended (its result was reported) by the time the
            # cancellation reached us: the thread is free for the next run.
            assert recorder.finished.is_set()
            after = await asyncio.wait_for(sandbox.run(guest("hello.wasm")), STOP_BOUND)
            return waited, after

    waited, after = asyncio.run(main())
    assert waited < STOP_BOUND
    assert after.outcome is Outcome.EXITED
    cancelled = recorder.results[0]
    assert cancelled.outcome is Outcome.ERROR and "cancelled" in cancelled.message
    assert not cancelled.outcome.is_violation  # the caller's choice, not the guest's fault
    assert cancelled.usage.wall_ms < STOP_BOUND * 1000


def test_wait_for_timeout_frees_the_pool_slot() -> None:
    async def main() -> Result:
        async with SandboxPool(SPIN_POLICY, size=1, isolate="none") as pool:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.run(guest("spin.wasm")), 1.0)
            # One sandbox only: this waits for the slot the spinning guest held.
            return await asyncio.wait_for(pool.run(guest("hello.wasm")), STOP_BOUND)

    assert asyncio.run(main()).outcome is Outcome.EXITED


def test_run_async_cancellation_stops_the_guest() -> None:
    recorder = Recorder()

    async def main() -> None:
        sandbox = Sandbox(SPIN_POLICY, observers=[recorder])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sandbox.run_async(guest("spin.wasm")), 1.0)

    began = time.monotonic()
    asyncio.run(main())
    assert recorder.finished.wait(STOP_BOUND)
    assert time.monotonic() - began < STOP_BOUND + 1
    assert recorder.results[0].outcome is Outcome.ERROR


def test_a_cancellation_does_not_stop_the_other_runs() -> None:
    """Cancelling one run advances the shared engine's epoch: a run beside it with its
    own deadline still ends by itself, and one with a short timeout still times out."""
    recorder = Recorder()

    async def main() -> tuple[Result, Result]:
        finite = Sandbox(Policy().with_limits(timeout="60s", fuel=None))
        short = Sandbox(Policy().with_limits(timeout="3s", fuel=None))
        victim = AsyncSandbox(sandbox=Sandbox(SPIN_POLICY, observers=[recorder]))
        counted = asyncio.create_task(
            finite.run_async(guest("spin.wasm"), Invocation(args=("300000000",))))
        bounded = asyncio.create_task(short.run_async(guest("spin.wasm")))
        spinning = asyncio.create_task(victim.run(guest("spin.wasm")))
        await asyncio.sleep(0.5)
        for _ in range(5):  # several cancellations' epoch increments
            spinning.cancel()
            await asyncio.sleep(0.05)
        with pytest.raises(asyncio.CancelledError):
            await spinning
        await victim.aclose()
        return await counted, await bounded

    counted, bounded = asyncio.run(main())
    assert counted.outcome is Outcome.EXITED and counted.stdout.strip().isdigit()
    assert bounded.outcome is Outcome.TIMEOUT
    assert bounded.usage.wall_ms >= 2900  # not cut short by the other run's cancellation
    assert recorder.results[0].outcome is Outcome.ERROR


def test_a_cancellation_while_the_run_is_armed_still_stops_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`cancel()` landing while `arm` sets the store's deadline (another thread, at the
    worst moment): its epoch tick must reach the callback, not be counted into the
    deadline (the guest then ran to its 60 s timeout), nor be undone by the deadline's
    set-up. On an engine keeping its deadline
    by epochs (the default is a tripwire, whose arming holds the token's lock)."""
    import wasmtime

    from stockade.engine import EngineConfig
    from stockade.sandbox.cancel import CancelToken, cancellable

    token = CancelToken()
    original = wasmtime.Store.set_epoch_deadline

    def cancel_then_set(store: wasmtime.Store, ticks: int) -> None:
        if ticks == 1 and not token.cancelled:
            token.cancel()  # as if from the event loop's thread, right now
        original(store, ticks)

    monkeypatch.setattr(wasmtime.Store, "set_epoch_deadline", cancel_then_set)
    # With the native library the deadline is set in C (`stockade_watch_start`), listed
    # with the library's deadline thread: the cancellation lands just before that.
    from stockade.engine.fastpath import _native

    if _native.WATCH is not None:
        start = _native.WATCH["start"]

        def cancel_then_start(*args: object) -> int:
            if not token.cancelled:
                token.cancel()
            return int(start(*args))

        monkeypatch.setitem(_native.WATCH, "start", cancel_then_start)
    began = time.monotonic()
    with cancellable(token):
        result = Sandbox(SPIN_POLICY, engine_config=EngineConfig.for_limits(
            SPIN_POLICY.limits, tripwire=False)).run(guest("spin.wasm"))
    assert time.monotonic() - began < STOP_BOUND
    assert result.outcome is Outcome.ERROR and "cancelled" in result.message


EPOCHS = EngineConfig.for_limits(Policy().with_limits(timeout="1s", fuel=None).limits,
                                 tripwire=False)


def test_moves_of_the_epoch_for_other_runs_do_not_stop_a_run_early() -> None:
    """Anyone may move an engine's epoch (a cancellation moves it a tick to wake its
    run): a run on an epochs engine stops at its deadline by the clock, not after a
    count of ticks. Here the epoch moves far more than the run's whole timeout."""
    policy = Policy().with_limits(timeout="1s", fuel=None)
    sandbox = Sandbox(policy, engine_config=EPOCHS)
    engine = get_engine(EPOCHS)
    done = threading.Event()

    def move_the_epoch() -> None:
        while not done.is_set():
            for _ in range(50):
                engine.wasmtime.increment_epoch()
            time.sleep(0.01)

    mover = threading.Thread(target=move_the_epoch)
    mover.start()
    began = time.monotonic()
    try:
        result = sandbox.run(guest("spin.wasm"))
    finally:
        ran = time.monotonic() - began
        done.set()
        mover.join()
    assert result.outcome is Outcome.TIMEOUT and result.message == "wall-clock timeout"
    assert 1.0 <= ran < STOP_BOUND


def test_cancellations_on_an_epochs_engine_do_not_stop_the_other_runs() -> None:
    """Each cancellation of a run on an epochs engine moves the shared epoch: a plain
    run beside it (no token: its deadline an epoch count before this was decided by
    the clock), on the same engine, still runs to its own deadline."""
    policy = Policy().with_limits(timeout="2s", fuel=None)
    results: list[Result] = []

    def run_bounded() -> None:
        began = time.monotonic()
        results.append(Sandbox(policy, engine_config=EPOCHS).run(guest("spin.wasm")))
        ran.append(time.monotonic() - began)

    ran: list[float] = []
    bounded = threading.Thread(target=run_bounded)

    async def cancel_runs() -> None:
        victim = AsyncSandbox(sandbox=Sandbox(SPIN_POLICY, engine_config=EPOCHS))
        async with victim:
            while bounded.is_alive():  # each run armed, then cancelled: one epoch tick
                spinning = asyncio.create_task(victim.run(guest("spin.wasm")))
                await asyncio.sleep(0.02)
                spinning.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await spinning

    bounded.start()
    asyncio.run(cancel_runs())
    bounded.join()
    assert results[0].outcome is Outcome.TIMEOUT
    assert ran[0] >= 2.0  # not cut short by the cancellations


def test_a_run_outlives_the_close_of_its_engine_and_still_times_out() -> None:
    """Closing an engine (a server shutting down) while a guest spins on it: the guest
    is still stopped at its deadline, not left without one."""
    policy = Policy().with_limits(timeout="1s", fuel=None)
    results: list[Result] = []
    started = threading.Event()

    class Started(Recorder):
        def run_started(self, info: RunInfo) -> None:
            started.set()

    running = threading.Thread(target=lambda: results.append(
        Sandbox(policy, engine_config=EPOCHS, observers=[Started()]).run(guest("spin.wasm"))))
    running.start()
    # Once the guest runs: a cold compile outlasted a fixed pause, and the run then
    # began on the closed engine.
    assert started.wait(STOP_BOUND)
    time.sleep(0.3)
    get_engine(EPOCHS).close()  # the next get_engine makes a new one
    running.join(STOP_BOUND)
    assert not running.is_alive()
    assert results[0].outcome is Outcome.TIMEOUT


CTRL_C = """
import os, signal, threading, time
# Ctrl-C as a terminal delivers it, whatever this process inherited (a child inherits an
# ignored or blocked SIGINT from its parent).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from stockade import Policy, Sandbox
from stockade.engine import EngineConfig
from stockade.sandbox.cancel import CancelToken, cancellable
from tests.conftest import guest

policy = Policy().with_limits(timeout="1s", fuel=None)
sandbox = Sandbox(policy, engine_config=EngineConfig.for_limits(policy.limits, tripwire=False))
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    with cancellable(CancelToken()) if {token} else open(os.devnull) as _:
        result = sandbox.run(guest("spin.wasm"))
    time.sleep(0.5)
    print("not interrupted", result.outcome)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("native", ["1", "0"], ids=["native", "without-native"])
@pytest.mark.parametrize("token", [False, True], ids=["plain", "cancellable"])
def test_ctrl_c_during_a_run_on_an_epochs_engine_is_an_interrupt_not_a_crash(
        token: bool, native: str) -> None:
    """Ctrl-C while a guest spins on an epochs engine: the epoch deadline's callback is
    entered with Python's exception pending. A ctypes callback then returned garbage,
    which wasmtime freed as an error: the process aborted (double free). The callback
    is C, none without the native library, and the interrupt reaches Python once the run
    has ended."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", CTRL_C.format(token=token)], cwd=root,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "STOCKADE_FASTPATH_NATIVE": native})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "interrupted"


@pytest.mark.parametrize(("timeout", "engine"), [
    (None, "default"), ("300s", "default"), (None, "epochs"), ("300s", "epochs"),
    (None, "bare")])
def test_a_cancellation_wakes_a_guest_sleeping_in_a_host_call(
        timeout: str | None, engine: str) -> None:
    """A guest asleep in `poll_oneoff` (`sleeper.wasm 300`) is in no code a tripwire or
    an epoch reaches: the cancellation wakes the sleep itself, with or without a
    deadline that would have ended it, also on an engine with neither ("bare")."""
    policy = Policy().with_limits(timeout=timeout, fuel=None)
    config = EngineConfig(fuel=False, epochs=False) if engine == "bare" else \
        EngineConfig.for_limits(policy.limits, tripwire=False if engine == "epochs" else None)
    recorder = Recorder()

    async def main() -> float:
        sandbox = AsyncSandbox(sandbox=Sandbox(policy, engine_config=config,
                                               observers=[recorder]))
        async with sandbox:
            return await cancelled_after_a_second(
                sandbox.run(guest("sleeper.wasm"), Invocation(args=("300",))))

    waited = asyncio.run(main())
    assert waited < STOP_BOUND
    cancelled = recorder.results[0]
    assert cancelled.outcome is Outcome.ERROR and "cancelled" in cancelled.message
    assert cancelled.stdout.startswith(b"sleeping") and b"woke up" not in cancelled.stdout


@pytest.mark.parametrize("isolate", ["process", "none"])
def test_cancelling_a_queued_run_stops_it_and_no_other(tmp_path: Any, isolate: str) -> None:
    """A run queued behind another on an `AsyncSandbox` and cancelled: cancelling called
    `interrupt()`, which killed the worker of the run in progress (another caller's),
    and the cancelled run still ran once that ended (found by review). Each run now
    stops on its own token only."""
    from stockade import DirGrant

    out = tmp_path / "out"
    out.mkdir()
    policy = Policy().with_limits(timeout="20s", fuel=None).with_capabilities(
        dirs=(DirGrant(out, "/out", writable=True),))

    async def main() -> Result:
        async with AsyncSandbox(policy, isolate=isolate) as sandbox:
            running = asyncio.create_task(
                sandbox.run(guest("sleeper.wasm"), Invocation(args=("2",))))
            await asyncio.sleep(0.8)
            queued = asyncio.create_task(sandbox.run(
                guest("attacks/disk_write.wasm"), Invocation(args=("1", "/out"))))
            await asyncio.sleep(0.2)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            return await running

    first = asyncio.run(main())
    assert first.outcome is Outcome.EXITED and b"woke up" in first.stdout, first.message
    assert not list(out.iterdir())  # the cancelled run never ran


def test_a_late_cancellation_does_not_reach_the_next_tenant() -> None:
    """A pool's cancellation sent the sandbox's `interrupt()` through the loop's default
    executor: landing after its run had ended (that executor busy with the program's
    own work), it killed the worker of the next tenant's run (found by review)."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> Result:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        async with SandboxPool(Policy().with_limits(timeout="20s"), size=1,
                               isolate="process") as pool:
            await pool.warm()
            first = asyncio.create_task(
                pool.run(guest("sleeper.wasm"), Invocation(args=("1",))))
            await asyncio.sleep(0.5)
            second = asyncio.create_task(
                pool.run(guest("sleeper.wasm"), Invocation(args=("2",))))
            await asyncio.sleep(0.1)
            busy = loop.run_in_executor(None, time.sleep, 1.5)  # the program's own work
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            result = await second
            await busy
            return result

    result = asyncio.run(main())
    assert result.outcome is Outcome.EXITED and b"woke up" in result.stdout, result.message


def test_a_cancellation_as_a_run_ends_leaves_no_killed_worker_to_the_next() -> None:
    """A token cancelled after its run's result was read, before it was let go, killed
    the worker, which stayed the sandbox's current one: the next caller's run died in
    it (found by the review of the fix). Here the cancellation comes from an observer,
    as the run ends."""
    from stockade.isolate.process import IsolatedSandbox
    from stockade.sandbox.cancel import CancelToken, cancellable

    tokens: list[CancelToken] = []

    class CancelAtTheEnd:
        def run_started(self, info: RunInfo) -> None:
            pass

        def run_finished(self, info: RunInfo, result: Result) -> None:
            if tokens:
                tokens[-1].cancel()

    with IsolatedSandbox(Policy().with_limits(timeout="20s"),
                         observers=[CancelAtTheEnd()]) as sandbox:
        for _ in range(3):
            tokens.append(CancelToken())
            with cancellable(tokens[-1]):
                sandbox.run(guest("hello.wasm"))
            tokens.clear()
            after = sandbox.run(guest("hello.wasm"))
            assert after.outcome is Outcome.EXITED, after.message


def test_a_second_aclose_returns_once_the_pool_is_closed() -> None:
    async def main() -> None:
        pool = SandboxPool(Policy().with_limits(timeout="20s"), size=1, isolate="none")
        running = asyncio.create_task(pool.run(guest("sleeper.wasm"), Invocation(args=("1",))))
        await asyncio.sleep(0.3)
        first = asyncio.create_task(pool.aclose())
        await asyncio.sleep(0)
        await pool.aclose()
        assert first.done() and running.done()

    asyncio.run(main())


def test_a_cancellation_as_a_run_fails_leaves_no_killed_worker_to_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, for a run whose worker answers with an error (a module it refuses): the
    discard was skipped by the exception, and a caller queued on the sandbox got the
    killed worker (found by the review of the fix)."""
    import stockade.isolate.process as process
    from stockade.sandbox.cancel import CancelToken, cancellable, current_token

    monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    answered = process.error_from_wire
    queued = threading.Event()

    def cancelled_as_it_answers(data: Any) -> Any:
        token = current_token()
        queued.wait(5)  # the other caller waits on the sandbox meanwhile
        time.sleep(0.05)
        if token is not None:
            token.cancel()
        return answered(data)

    monkeypatch.setattr(process, "error_from_wire", cancelled_as_it_answers)
    others: list[Result] = []
    with process.IsolatedSandbox(Policy().with_limits(timeout="20s")) as sandbox:
        sandbox.run(guest("hello.wasm"))

        def cancelled_caller() -> None:
            with cancellable(CancelToken()), contextlib.suppress(Exception):
                sandbox.run(b"\0asm\x01\0\0\0\xff\xff\xff")

        for _ in range(3):
            queued.clear()
            first = threading.Thread(target=cancelled_caller)
            first.start()
            time.sleep(0.2)
            second = threading.Thread(target=lambda: others.append(
                sandbox.run(guest("hello.wasm"))))
            second.start()
            queued.set()
            first.join()
            second.join()
    assert [r.outcome for r in others] == [Outcome.EXITED] * 3, [r.message for r in others]


def test_aclose_from_two_loops_at_once() -> None:
    """The second `aclose()` awaited a future of the first call's loop: from another loop
    it raised RuntimeError (found by review)."""
    pool = SandboxPool(Policy().with_limits(timeout="20s"), size=1, isolate="none")
    shutdown = pool._shutdown

    def slow_shutdown() -> None:  # still closing when the second caller comes
        time.sleep(0.5)
        shutdown()

    pool._shutdown = slow_shutdown  # type: ignore[method-assign]
    first = threading.Thread(target=lambda: asyncio.run(pool.aclose()))
    first.start()
    time.sleep(0.1)
    try:
        asyncio.run(asyncio.wait_for(pool.aclose(), 10))
    finally:
        first.join()


def test_observers_are_told_an_isolated_run_was_cancelled() -> None:
    """The caller's result said "cancelled by the caller", while observers (telemetry,
    the audit log) were told "the worker was killed (SIGKILL)": the message was changed
    after they had written theirs down (found by review)."""
    from stockade.isolate.process import IsolatedSandbox

    told: list[str] = []

    class WritesDown(Recorder):
        def run_finished(self, info: RunInfo, result: Result) -> None:
            told.append(result.message)  # as telemetry serialises it, then and there
            super().run_finished(info, result)

    recorder = WritesDown()

    async def main() -> None:
        sandbox = AsyncSandbox(sandbox=IsolatedSandbox(SPIN_POLICY, observers=[recorder]))
        async with sandbox:
            await cancelled_after_a_second(sandbox.run(guest("spin.wasm")))

    asyncio.run(main())
    assert recorder.finished.wait(STOP_BOUND)
    assert len(told) == 1 and "cancelled" in told[0], told


@pytest.mark.parametrize("isolate", ["process", "none"])
def test_close_on_the_loop_stops_the_runs_without_waiting_for_them(isolate: str) -> None:
    """`AsyncSandbox.close()` called on the event loop while a guest sleeps for 30 s:
    an isolated sandbox's close waited for the run (its lock), holding the loop until
    the guest ended; an in-process guest kept running on the sandbox's thread. Both
    runs, the one in progress and the one waiting, are now stopped at once, and the
    sandbox takes no more."""
    from stockade.errors import UsageError

    policy = Policy().with_limits(timeout="60s", fuel=None)

    async def main() -> tuple[float, Result, Result, int | None]:
        sandbox = AsyncSandbox(policy, isolate=isolate)
        running = asyncio.create_task(
            sandbox.run(guest("sleeper.wasm"), Invocation(args=("30",))))
        waiting = asyncio.create_task(sandbox.run(guest("hello.wasm")))
        await asyncio.sleep(1.5)
        assert not running.done()
        worker = getattr(sandbox.sandbox, "worker_pid", None)
        began = time.monotonic()
        sandbox.close()
        held = time.monotonic() - began
        first = await asyncio.wait_for(running, STOP_BOUND)
        second = await asyncio.wait_for(waiting, STOP_BOUND)
        with pytest.raises(UsageError, match="closed"):
            await sandbox.run(guest("hello.wasm"))
        sandbox.close()  # safe twice
        await sandbox.aclose()  # returns once the sandbox is closed
        return held, first, second, worker

    held, first, second, worker = asyncio.run(main())
    assert held < 1.0, f"close() held the event loop for {held:.1f} s"
    assert first.outcome is Outcome.ERROR and "cancelled" in first.message, first.message
    assert second.outcome is Outcome.ERROR and "cancelled" in second.message, second.message
    assert not second.stdout  # the waiting run never ran
    if worker is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)


def test_close_during_aclose_stops_the_runs_aclose_waits_for() -> None:
    """Graceful, then forced: `aclose()` given a second, then `close()`. `close()` did
    nothing once `aclose()` had begun, and the guest ran out its whole timeout (found by
    review)."""
    policy = Policy().with_limits(timeout="60s", fuel=None)

    async def main() -> tuple[float, Result]:
        sandbox = AsyncSandbox(policy, isolate="none")
        running = asyncio.create_task(
            sandbox.run(guest("sleeper.wasm"), Invocation(args=("30",))))
        await asyncio.sleep(1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sandbox.aclose()), 0.5)
        began = time.monotonic()
        sandbox.close()
        result = await asyncio.wait_for(running, STOP_BOUND)
        return time.monotonic() - began, result

    waited, result = asyncio.run(main())
    assert waited < STOP_BOUND
    assert result.outcome is Outcome.ERROR and "cancelled" in result.message, result.message

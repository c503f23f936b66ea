"""Cancelling an in-process asyncio run stops its guest, frees its slot and says so.

The guest is `spin.wasm`, a CPU loop that never calls the host, under a 60 s timeout and
no fuel: only the cancellation can stop it within the tests' bounds.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stockade import AsyncSandbox, Invocation, Outcome, Policy, Sandbox, SandboxPool
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


def test_cancelling_the_task_stops_an_in_process_guest() -> None:
    recorder = Recorder()

    async def main() -> tuple[float, Result]:
        sandbox = AsyncSandbox(sandbox=Sandbox(SPIN_POLICY, observers=[recorder]))
        async with sandbox:
            task = asyncio.create_task(sandbox.run(guest("spin.wasm")))
            await asyncio.sleep(1.0)
            assert not task.done()
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            waited = time.monotonic() - began
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
    deadline (the guest then ran to its 60 s timeout). On an engine keeping its deadline
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
    began = time.monotonic()
    with cancellable(token):
        result = Sandbox(SPIN_POLICY, engine_config=EngineConfig.for_limits(
            SPIN_POLICY.limits, tripwire=False)).run(guest("spin.wasm"))
    assert time.monotonic() - began < STOP_BOUND
    assert result.outcome is Outcome.ERROR and "cancelled" in result.message

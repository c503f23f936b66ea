"""`SandboxPool` and `AsyncSandbox` from a real asyncio program, with real CPython."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from pathlib import Path

import pytest

from stockade import AsyncSandbox, Invocation, Outcome, Policy, PoolBusy, SandboxPool, UsageError
from stockade.cpython import python_policy
from stockade.result import Result
from tests.conftest import guest

pytestmark = pytest.mark.cpython


def _children() -> set[int]:
    """Processes whose parent is this one (workers left behind would show here)."""
    mine = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                mine.add(int(entry))
    return mine


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_a_hundred_snippets_in_order(python_wasm: Path, isolate: str) -> None:
    before = _children()
    policy = python_policy()

    async def main() -> tuple[list[object], list[float], float]:
        latencies: list[float] = []

        async def one(pool: SandboxPool, index: int) -> object:
            started = time.perf_counter()
            code = ("x = []\nwhile True: x.append(bytearray(1 << 20))" if index == 37
                    else f"print({index} * 2)")
            result = await pool.run_python(code)
            latencies.append(time.perf_counter() - started)
            return result

        async with SandboxPool(policy, size=4, isolate=isolate) as pool:
            await pool.warm(python_wasm)
            began = time.perf_counter()
            results = await asyncio.gather(*(one(pool, i) for i in range(100)))
            return list(results), latencies, time.perf_counter() - began

    results, latencies, elapsed = asyncio.run(main())
    for index, result in enumerate(results):
        if index == 37:  # the violating snippet: stopped, and the next one still runs
            assert result.outcome is Outcome.MEMORY_LIMIT  # type: ignore[attr-defined]
        else:
            assert result.stdout == f"{index * 2}\n".encode(), (index, result)  # type: ignore[attr-defined]
    ordered = sorted(latencies)
    service = sorted(r.usage.wall_ms for r in results)  # type: ignore[attr-defined]
    print(f"\n{isolate}: 100 snippets, 4 sandboxes: {100 / elapsed:.1f}/s; awaited "
          f"p50 {statistics.median(ordered) * 1000:.0f} ms p99 {ordered[98] * 1000:.0f} ms "
          f"(all submitted at once); run p50 {statistics.median(service):.0f} ms "
          f"p99 {service[98]:.0f} ms")
    assert _children() <= before  # no worker left behind


def test_back_pressure_refuses_past_the_bound() -> None:
    async def main() -> list[object]:
        policy = Policy().with_limits(timeout="2s")
        async with SandboxPool(policy, size=1, isolate="none", max_waiting=1) as pool:
            sleeper = guest("sleeper.wasm")
            tasks = [asyncio.create_task(pool.run(sleeper, Invocation(args=("1",))))
                     for _ in range(3)]
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, PoolBusy) for o in outcomes) == 1
    assert sum(getattr(o, "outcome", None) is Outcome.EXITED for o in outcomes) == 2


def test_cancelling_stops_an_isolated_guest() -> None:
    async def main() -> tuple[float, object]:
        policy = Policy().with_limits(timeout="60s", fuel=None)
        async with AsyncSandbox(policy, isolate="process") as sandbox:
            task = asyncio.create_task(sandbox.run(guest("spin.wasm")))
            await asyncio.sleep(1.0)
            pid = sandbox.sandbox.worker_pid
            task.cancel()
            began = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pid is not None
            # The worker running the guest is gone (killed, not left spinning).
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
            after = await sandbox.run(guest("hello.wasm"))  # and the next run works
            return time.monotonic() - began, after

    waited, after = asyncio.run(main())
    assert waited < 30
    assert after.outcome is Outcome.EXITED  # type: ignore[attr-defined]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_run_async_of_a_sandbox() -> None:
    from stockade import Sandbox

    async def main() -> object:
        return await Sandbox().run_async(guest("hello.wasm"), Invocation(args=("a",)))

    assert asyncio.run(main()).outcome is Outcome.EXITED  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [{"size": 0}, {"size": "4"}, {"size": 1025}, {"max_waiting": -1}])
def test_bad_pool_arguments(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        SandboxPool(Policy(), isolate="none", **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_closing_with_callers_waiting_refuses_them_all(isolate: str) -> None:
    """`aclose()` while callers waited for a sandbox: the first got RuntimeError ("cannot
    schedule new futures after shutdown") and never gave the sandbox back, so the others
    waited for ever (found by review). Each is told the pool is closed."""
    async def main() -> tuple[Result, list[BaseException | None]]:
        pool = SandboxPool(Policy().with_limits(timeout="10s"), size=1, isolate=isolate)
        running = asyncio.create_task(pool.run(guest("sleeper.wasm"), Invocation(args=("1",))))
        await asyncio.sleep(0.3)
        waiting = [asyncio.create_task(pool.run(guest("hello.wasm"))) for _ in range(3)]
        await asyncio.sleep(0.1)
        await pool.aclose()
        done, pending = await asyncio.wait(waiting, timeout=10)
        assert not pending
        return await running, [task.exception() for task in waiting]

    ran, refusals = asyncio.run(main())
    assert ran.outcome is Outcome.EXITED
    assert all(isinstance(error, UsageError) and "closed" in str(error)
               for error in refusals), refusals


class _SlowToFinish:
    """An observer that holds the run's thread `seconds` after its first run ends: no
    cancellation reaches it, so the thread outlives the awaiting task's loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def run_started(self, info: object) -> None:
        pass

    def run_finished(self, info: object, result: object) -> None:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_a_run_outliving_its_event_loop_gives_its_sandbox_back(isolate: str) -> None:
    """The sandbox went back to the pool through a callback on the caller's loop: once
    that loop had ended (`asyncio.run` returned while the run's thread went on), the
    pool's only sandbox was lost for good and the next caller waited for ever."""
    slow = _SlowToFinish(4.0)
    pool = SandboxPool(Policy().with_limits(timeout="20s"), size=1, isolate=isolate,
                       observers=[slow])

    async def abandoned() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(pool.run(guest("hello.wasm")), 0.5)

    async def later() -> Result:
        return await asyncio.wait_for(pool.run(guest("hello.wasm"), Invocation(args=("b",))),
                                      20)

    try:
        asyncio.run(abandoned())
        time.sleep(slow.seconds)  # the first run's thread ends meanwhile, its loop gone
        assert asyncio.run(later()).ok
    finally:
        asyncio.run(pool.aclose())


def test_a_pool_serves_callers_on_one_loop_after_another() -> None:
    """The idle queue belonged to the first loop that used it: concurrent runs from a
    second `asyncio.run` raised RuntimeError ("bound to a different event loop")."""
    pool = SandboxPool(Policy().with_limits(timeout="20s"), size=1, isolate="none")

    async def batch(tag: str) -> list[Result]:
        return list(await asyncio.gather(*(
            pool.run(guest("hello.wasm"), Invocation(args=(f"{tag}{index}",)))
            for index in range(3))))

    try:
        for tag in ("first", "second", "third"):
            results = asyncio.run(batch(tag))
            assert [r.stdout.splitlines()[1] for r in results] == [
                f"arg 1: {tag}{index}".encode() for index in range(3)]
    finally:
        asyncio.run(pool.aclose())


def test_a_pool_serves_two_loops_on_two_threads_at_once() -> None:
    pool = SandboxPool(Policy().with_limits(timeout="20s"), size=1, isolate="none")
    outcomes: list[object] = []

    async def batch() -> list[Result]:
        return list(await asyncio.gather(*(
            pool.run(guest("sleeper.wasm"), Invocation(args=("0",))) for _ in range(3))))

    def on_a_thread() -> None:
        try:
            outcomes.extend(asyncio.run(batch()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcomes.append(exc)

    threads = [threading.Thread(target=on_a_thread) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(outcomes) == 6 and all(getattr(o, "ok", False) for o in outcomes), outcomes
    finally:
        asyncio.run(pool.aclose())

"""Worker isolation overhead (pytest-benchmark):
`.venv/bin/pytest benchmarks/bench_isolate.py --benchmark-enable`.

The hello module under the strict profile, warm from the AoT cache:

- per run: in-process `Sandbox` vs `IsolatedSandbox` with a reused worker (all
  protections on), and the same worker with every protection off (what the pipe and
  pickling alone cost);
- per worker: starting a hardened worker until it is ready, and a one-shot isolated run
  (start, run, close: what `stockade run --isolate process` pays);
- after a timeout (default profile, a worker that keeps the deadline by ending itself):
  the hello run right after a spinning guest's timeout, with the sandbox's spare worker
  and without it (`IsolationConfig.spare_worker=False`: the run waits for a start-up);
  and with epochs (`process_deadline=False`: the worker survives the timeout).

Compare the medians of one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from stockade import Invocation, Policy, Sandbox
from stockade.isolate import IsolatedSandbox, IsolationConfig

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "build" / "guests" / "hello.wasm"


class BenchmarkFixture(Protocol):
    """The part of pytest-benchmark's (untyped) fixture used here."""

    def pedantic(self, target: Callable[..., Any], args: tuple[Any, ...] = (),
                 setup: Callable[[], Any] | None = None, rounds: int = 1,
                 iterations: int = 1, warmup_rounds: int = 0) -> Any: ...


BARE = IsolationConfig(seccomp=False, network_namespace=False, cgroup=False,
                       drop_capabilities=False)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """One AoT cache for these benchmarks, inherited by the workers."""
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def policy() -> Policy:
    return Policy.from_profile("strict")


def _per_run(benchmark: BenchmarkFixture, sandbox: Sandbox | IsolatedSandbox) -> None:
    assert sandbox.run(HELLO).ok
    benchmark.pedantic(sandbox.run, args=(HELLO, Invocation()), rounds=2000, iterations=1,
                       warmup_rounds=50)


@pytest.fixture
def in_process(policy: Policy) -> Iterator[Sandbox]:
    with Sandbox(policy) as sandbox:
        yield sandbox


@pytest.fixture
def isolated(policy: Policy) -> Iterator[IsolatedSandbox]:
    with IsolatedSandbox(policy) as sandbox:
        yield sandbox


@pytest.fixture
def isolated_bare(policy: Policy) -> Iterator[IsolatedSandbox]:
    with IsolatedSandbox(policy, config=BARE) as sandbox:
        yield sandbox


@pytest.mark.benchmark(group="hello per run")
def test_in_process(benchmark: BenchmarkFixture, in_process: Sandbox) -> None:
    _per_run(benchmark, in_process)


@pytest.mark.benchmark(group="hello per run")
def test_isolated_reused_worker(benchmark: BenchmarkFixture,
                                isolated: IsolatedSandbox) -> None:
    _per_run(benchmark, isolated)


@pytest.mark.benchmark(group="hello per run")
def test_isolated_no_protections(benchmark: BenchmarkFixture,
                                 isolated_bare: IsolatedSandbox) -> None:
    _per_run(benchmark, isolated_bare)


def _start(policy: Policy, config: IsolationConfig | None) -> None:
    with IsolatedSandbox(policy, config=config) as sandbox:
        sandbox.protections()


def _one_shot(policy: Policy) -> None:
    with IsolatedSandbox(policy) as sandbox:
        sandbox.run(HELLO)


@pytest.mark.benchmark(group="worker start")
def test_start_hardened_worker(benchmark: BenchmarkFixture, policy: Policy) -> None:
    _start(policy, None)
    benchmark.pedantic(_start, args=(policy, None), rounds=15, iterations=1)


@pytest.mark.benchmark(group="worker start")
def test_start_bare_worker(benchmark: BenchmarkFixture, policy: Policy) -> None:
    benchmark.pedantic(_start, args=(policy, BARE), rounds=15, iterations=1)


@pytest.mark.benchmark(group="worker start")
def test_one_shot_isolated_run(benchmark: BenchmarkFixture, policy: Policy) -> None:
    benchmark.pedantic(_one_shot, args=(policy,), rounds=15, iterations=1)


SPIN = ROOT / "build" / "guests" / "spin_loop.wasm"


def _after_timeout(benchmark: BenchmarkFixture, spare: bool, epochs: bool = False) -> None:
    policy = Policy.from_profile("default").with_limits(timeout=0.2)
    config = IsolationConfig(spare_worker=spare, process_deadline=not epochs)
    with IsolatedSandbox(policy, config=config) as sandbox:
        for _ in range(2):  # from the second run on, a sandbox keeps its spare
            assert sandbox.run(HELLO).ok

        def spin() -> tuple[tuple[Any, ...], dict[str, Any]]:
            assert sandbox.run(SPIN).outcome.value == "timeout"
            return (HELLO, Invocation()), {}

        benchmark.pedantic(sandbox.run, setup=spin, rounds=15, iterations=1)


@pytest.mark.benchmark(group="hello after a timeout")
def test_hello_after_timeout_spare(benchmark: BenchmarkFixture) -> None:
    _after_timeout(benchmark, True)


@pytest.mark.benchmark(group="hello after a timeout")
def test_hello_after_timeout_no_spare(benchmark: BenchmarkFixture) -> None:
    _after_timeout(benchmark, False)


@pytest.mark.benchmark(group="hello after a timeout")
def test_hello_after_timeout_epochs(benchmark: BenchmarkFixture) -> None:
    _after_timeout(benchmark, False, epochs=True)

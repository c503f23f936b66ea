"""The fast executor's inline attempt: when a function is sent to a guest thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.engine.fastpath import FastResult
from stockade.gateway.executor import Executors
from stockade.gateway.fastexec import FastFunction
from stockade.gateway.manifest import load_manifest
from stockade.invocation import Invocation
from stockade.result import Outcome

from .conftest import Start, module


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[FastFunction]:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "hello"\nroute = "/hello"\n'
                        f'module = "{module("hello")}"\n')
    executors = Executors("fast", threads=1)
    prepared = executors.prepare(load_manifest(manifest).functions[0])
    assert isinstance(prepared, FastFunction)
    yield prepared
    executors.close()


def ended(outcome: Outcome, wall_s: float, cpu_s: float) -> FastResult:
    return FastResult(outcome, None, b"", b"", False, False, outcome.value, 0, wall_s, cpu_s,
                      0)


def test_a_compute_bound_or_fuel_bound_run_backs_off_at_once(hello: FastFunction) -> None:
    assert hello._outgrew_inline(ended(Outcome.FUEL_EXHAUSTED, 0.001, 0.001))
    assert hello._outgrew_inline(ended(Outcome.TIMEOUT, 0.010, 0.009))


def test_a_timeout_with_little_cpu_counts_the_second_time_in_a_row(
        hello: FastFunction) -> None:
    # A worker descheduled on a busy machine (or a sleeping guest) uses little CPU.
    idle = ended(Outcome.TIMEOUT, 0.010, 0.001)
    assert not hello._outgrew_inline(idle)
    assert hello._outgrew_inline(idle)


def test_a_run_that_fits_resets_the_count(hello: FastFunction) -> None:
    idle = ended(Outcome.TIMEOUT, 0.010, 0.001)
    assert not hello._outgrew_inline(idle)
    result, _ = hello.try_inline(Invocation(env=(("REQUEST_METHOD", "GET"),)))
    assert result is not None and result.outcome is Outcome.EXITED
    assert not hello._outgrew_inline(idle)



def test_limits_above_the_standard_slots_get_an_engine_of_their_own(tmp_path: Path) -> None:
    # A memory and table limit above the standard pool's slots: still the fast path.
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "big"\nroute = "/big"\n'
                        f'module = "{module("hello")}"\nprofile = "default"\n'
                        '[function.limits]\nmax_memory = "512MiB"\n'
                        'max_table_elements = 200000\n')
    executors = Executors("auto", threads=1)
    try:
        prepared = executors.prepare(load_manifest(manifest).functions[0])
        assert isinstance(prepared, FastFunction)
        result = prepared.run(Invocation(env=(("REQUEST_METHOD", "GET"),)))
        assert result.outcome is Outcome.EXITED, result.message
    finally:
        executors.close()


def test_runs_sent_to_a_guest_thread_are_counted(start_gateway: Start) -> None:
    # spin with n=30,000,000 computes for about 30 ms: more than the inline budget
    # (INLINE_FUEL instructions, INLINE_TIMEOUT), well within its own limits. The first
    # run is abandoned, the next skips the attempt while the function backs off: both
    # go to a guest thread.
    gateway = start_gateway(f'''
[server]
workers = 1
telemetry = "off"
[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
profile = "default"
''')
    for _ in range(2):
        response = gateway.client.get("/spin?n=30000000")
        assert response.status_code == 200, response.text
    metrics = gateway.client.get("/metrics").text
    assert 'stockade_gateway_offloaded_total{function="spin",tenant="default"} 2' in metrics
    assert 'outcome="exited",executor="fast"} 2' in metrics

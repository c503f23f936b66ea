"""A run stopped at its deadline never reports a false count of the fuel it consumed.

wasmtime keeps a function's fuel count in a register and writes it to the store only
at calls, returns and its own out-of-fuel check: a guest an epoch interrupt or a
tripwire stops in its own code unwinds with the rest of its count unwritten, and the
store said 0 for a loop without calls (`fuel_consumed: 0` after seconds of spinning).
That count cannot be read, so it is null. A guest the deadline stops inside a host call
(a sleep cut short) had its count written by the call: that one is exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.engine import EngineConfig
from stockade.sandbox.capi import CapiSandbox
from tests.conftest import guest

from .backends import IN_PROCESS, run_on

BUDGET = 10**13  # hours of spinning: the deadline comes first


def _stopped(result: Result) -> int | None:
    assert (result.outcome, result.exit_code) == (Outcome.TIMEOUT, 124), result.message
    assert result.to_dict()["usage"]["fuel_consumed"] == result.usage.fuel_consumed
    return result.usage.fuel_consumed


@pytest.mark.parametrize("backend", IN_PROCESS)
def test_a_guest_stopped_in_its_own_code_has_no_count(backend: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_profile("default").with_limits(fuel=BUDGET, timeout=0.3)
    result = run_on(backend, policy, guest("spin.wasm"), Invocation(), tmp_path, monkeypatch)
    assert _stopped(result) is None


@pytest.mark.parametrize("backend", IN_PROCESS)
def test_a_guest_stopped_in_a_host_call_has_its_count(backend: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_profile("default").with_limits(fuel=BUDGET, timeout=0.3)
    result = run_on(backend, policy, guest("sleeper.wasm"), Invocation(args=("8",)),
                    tmp_path, monkeypatch)
    fuel = _stopped(result)
    assert fuel is not None and 0 < fuel < 1_000_000, fuel
    # The same guest sleeping 0 s exits: its count up to the sleep is about the same.
    done = run_on(backend, policy, guest("sleeper.wasm"), Invocation(args=("0",)),
                  tmp_path, monkeypatch)
    assert done.ok and done.usage.fuel_consumed is not None
    assert fuel <= done.usage.fuel_consumed


@pytest.mark.parametrize("sandbox_class", [Sandbox, CapiSandbox])
def test_a_tripwire_stop_has_no_count(sandbox_class: type[Sandbox] | type[CapiSandbox]) -> None:
    # An engine that meters fuel and keeps its deadline by a tripwire (an API caller's
    # configuration: a policy with a budget keeps epochs).
    policy = Policy.from_profile("default").with_limits(fuel=BUDGET, timeout=0.3)
    config = EngineConfig(fuel=True, epochs=False, tripwire=True)
    with sandbox_class(policy, engine_config=config) as sandbox:
        assert _stopped(sandbox.run(guest("spin.wasm"))) is None


# A loop without calls, `n` iterations long, then `trap` with no call between.
def _looping_then(trap: str, n: int = 200_000) -> bytes:
    import wasmtime

    return wasmtime.wat2wasm(f"""
      (module
        (memory 1)
        (func (export "_start") (local $i i32)
          (loop $l
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
          {trap}))""")


TRAPS = {
    "out of bounds": "(drop (i32.load (i32.const 0x7ffffff0)))",
    "divide by zero": "(drop (i32.div_u (local.get $i) (i32.const 0)))",
    "unreachable": "unreachable",
}


@pytest.mark.parametrize("trap", sorted(TRAPS))
@pytest.mark.parametrize("backend", IN_PROCESS)
def test_a_trap_in_the_guests_own_code_never_reports_a_false_count(
        backend: str, trap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The count of a trap wasmtime raises from a fault (a bad address, a zero divisor) is
    # the register's, lost with the frame: the store still says what the last call left.
    module = tmp_path / "loop.wasm"
    module.write_bytes(_looping_then(TRAPS[trap]))
    policy = Policy.from_profile("default").with_limits(fuel=BUDGET)
    result = run_on(backend, policy, module, Invocation(), tmp_path, monkeypatch)
    assert result.outcome is Outcome.TRAP, result.message
    fuel = result.usage.fuel_consumed
    assert fuel is None or fuel >= 200_000, (result.message, fuel)

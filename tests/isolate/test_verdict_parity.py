"""An isolated worker gives the in-process verdicts: a guest's own exit code of 126 or
more is an exit, a refused grow then a failure is the memory limit, and a run stopped at
its deadline reports no false count of the fuel it consumed (see tests/sandbox for each
on its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from tests.conftest import guest
from tests.sandbox.backends import ISOLATED, run_on
from tests.sandbox.test_exit_codes import EXITS
from tests.sandbox.test_refused_grow import GROWS

MiB = 1024**2


@pytest.mark.parametrize("backend", ISOLATED)
@pytest.mark.parametrize(("code", "process_code"), [(126, 126), (200, 200), (256, 255)])
def test_an_exit_code_of_126_or_more_is_an_exit(backend: str, code: int, process_code: int,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "exits.wat"
    module.write_text(EXITS.format(code=code))
    result = run_on(backend, Policy.from_profile("strict"), module, Invocation(), tmp_path,
                    monkeypatch)
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (
        Outcome.EXITED, code, process_code), result.message


@pytest.mark.parametrize("backend", ISOLATED)
@pytest.mark.parametrize(("refused", "outcome", "exit_code"), [
    ("(call $exit (i32.const 1))", Outcome.MEMORY_LIMIT, 137),
    ("unreachable", Outcome.MEMORY_LIMIT, 137),
    ("(call $exit (i32.const 0))", Outcome.EXITED, 0),
])
@pytest.mark.parametrize("fuel", [None, 10**9], ids=["no-fuel", "fuel"])
def test_a_refused_grow_then_a_failure_is_the_memory_limit(
        backend: str, refused: str, outcome: Outcome, exit_code: int, fuel: int | None,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "grows.wat"
    module.write_text(GROWS.format(pages=16384, maximum="", refused=refused))
    policy = Policy.from_profile("default").with_limits(max_memory=16 * MiB, fuel=fuel)
    result = run_on(backend, policy, module, Invocation(), tmp_path, monkeypatch)
    assert (result.outcome, result.exit_code) == (outcome, exit_code), result.message


@pytest.mark.parametrize("backend", ISOLATED)
def test_a_malloc_past_the_limit_is_the_memory_limit(backend: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_on(backend, Policy.from_profile("strict"), guest("bigalloc.wasm"),
                    Invocation(args=("1024",)), tmp_path, monkeypatch)
    assert (result.outcome, result.exit_code) == (Outcome.MEMORY_LIMIT, 137), result.message


@pytest.mark.parametrize("backend", ISOLATED)
@pytest.mark.parametrize(("name", "args"), [("spin.wasm", ()), ("sleeper.wasm", ("8",))])
def test_fuel_after_the_deadline_is_never_a_false_count(
        backend: str, name: str, args: tuple[str, ...], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_profile("default").with_limits(fuel=10**13, timeout=0.3)
    result = run_on(backend, policy, guest(name), Invocation(args=args), tmp_path,
                    monkeypatch)
    assert result.outcome is Outcome.TIMEOUT, result.message
    fuel = result.usage.fuel_consumed
    if name == "spin.wasm":  # stopped in its own code: the count is not known
        assert fuel is None
    else:  # stopped in a host call, whose call wrote the count
        assert fuel is not None and fuel > 0

"""Circuit breakers: open after N violations, refuse until the cooldown, one probe."""

from __future__ import annotations

import multiprocessing
from datetime import datetime
from pathlib import Path

import pytest

from stockade.errors import UsageError
from stockade.result import Outcome
from stockade.telemetry import Breaker, BreakerConfig, Transition, refusal_result

from .runs import DIGEST

T0 = 1_800_000_000.0


@pytest.fixture
def breaker(tmp_path: Path) -> Breaker:
    return Breaker(tmp_path / "breaker.db", BreakerConfig(threshold=3, window=60, cooldown=30))


def test_three_violations_open_it_and_the_fourth_run_is_refused(breaker: Breaker) -> None:
    for offset in range(3):
        assert breaker.check(DIGEST, now=T0 + offset).allowed
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    decision = breaker.check(DIGEST, now=T0 + 3)
    assert not decision.allowed and decision.state == "open"
    assert decision.until == T0 + 2 + 30
    assert decision.until_iso is not None and decision.until_iso in decision.message
    assert datetime.fromisoformat(decision.until_iso).timestamp() == T0 + 32
    result = refusal_result(decision, "m.wasm", DIGEST)
    assert result.outcome is Outcome.DENIED and result.exit_code == 126


def test_violations_outside_the_window_do_not_count(breaker: Breaker) -> None:
    for offset in (0, 40, 80, 120):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    assert breaker.check(DIGEST, now=T0 + 121).allowed


def test_after_the_cooldown_exactly_one_probe_runs(breaker: Breaker) -> None:
    for offset in range(3):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    probe = breaker.check(DIGEST, now=T0 + 40)
    assert probe.allowed and probe.probe and probe.state == "half_open"
    second = breaker.check(DIGEST, now=T0 + 41)
    assert not second.allowed and second.state == "half_open"
    change = breaker.record(DIGEST, None, violated=False, now=T0 + 42)
    assert change is not None and (change.old, change.new) == ("half_open", "closed")
    assert breaker.check(DIGEST, now=T0 + 43).allowed


def test_only_the_probe_closes_it(breaker: Breaker, tmp_path: Path) -> None:
    # Another process's clean run (one admitted before the breaker opened) proves nothing.
    other = Breaker(tmp_path / "breaker.db", breaker.config)
    for offset in range(3):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    assert breaker.check(DIGEST, now=T0 + 40).probe
    assert other.record(DIGEST, None, violated=False, now=T0 + 41) is None
    assert not other.check(DIGEST, now=T0 + 42).allowed  # the probe is still out
    change = breaker.record(DIGEST, None, violated=False, now=T0 + 43)
    assert change is not None and change.new == "closed"
    other.close()


def test_a_violating_probe_opens_it_again(breaker: Breaker) -> None:
    for offset in range(3):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    assert breaker.check(DIGEST, now=T0 + 40).probe
    change = breaker.record(DIGEST, None, violated=True, now=T0 + 41)
    assert change is not None and change.new == "open" and change.until == T0 + 71
    assert not breaker.check(DIGEST, now=T0 + 50).allowed


def test_state_survives_reopening_the_database(tmp_path: Path) -> None:
    path = tmp_path / "breaker.db"
    with Breaker(path) as first:
        for offset in range(3):
            first.record(DIGEST, None, violated=True, now=T0 + offset)
    with Breaker(path) as second:
        assert not second.check(DIGEST, now=T0 + 5).allowed
        (entry,) = second.entries(now=T0 + 5)
        assert (entry.state, entry.violations, entry.trips) == ("open", 3, 1)


def test_tenants_have_their_own_breakers(breaker: Breaker) -> None:
    for offset in range(3):
        breaker.record(DIGEST, "alice", violated=True, now=T0 + offset)
    assert not breaker.check(DIGEST, "alice", now=T0 + 3).allowed
    assert breaker.check(DIGEST, "bob", now=T0 + 3).allowed
    assert breaker.check(DIGEST, now=T0 + 3).allowed


def test_transitions_are_reported_and_reset_closes(tmp_path: Path) -> None:
    seen: list[Transition] = []
    with Breaker(tmp_path / "b.db", on_transition=seen.append) as breaker:
        for offset in range(3):
            breaker.record(DIGEST, None, violated=True, now=T0 + offset)
        breaker.check(DIGEST, now=T0 + 100)
        assert [(t.old, t.new) for t in seen] == [("closed", "open"), ("open", "half_open")]
        removed = breaker.reset(DIGEST[:8])
        assert [e.digest for e in removed] == [DIGEST]
        assert breaker.entries() == [] and breaker.check(DIGEST).allowed


def _violate(path: str) -> None:
    with Breaker(path) as breaker:
        breaker.record(DIGEST, None, violated=True)


def test_processes_share_breakers(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    for _ in range(3):
        worker = context.Process(target=_violate, args=(path,))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
    with Breaker(path) as breaker:
        assert not breaker.check(DIGEST).allowed


def test_configuration_from_the_environment() -> None:
    config = BreakerConfig.from_env({"STOCKADE_BREAKER_THRESHOLD": "5",
                                     "STOCKADE_BREAKER_WINDOW": "2m",
                                     "STOCKADE_BREAKER_COOLDOWN": "500ms"})
    assert (config.threshold, config.window, config.cooldown) == (5, 120.0, 0.5)
    with pytest.raises(UsageError, match="STOCKADE_BREAKER_THRESHOLD"):
        BreakerConfig.from_env({"STOCKADE_BREAKER_THRESHOLD": "many"})

"""Circuit breakers: open after N counted violations, refuse until the cooldown, exactly
one probe; what counts, what a failed probe is, and counting across processes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Policy, Sandbox
from stockade.errors import ModuleNotFound, UsageError
from stockade.observe import RunInfo
from stockade.result import Outcome, Result
from stockade.telemetry import Breaker, BreakerConfig, Transition, open_telemetry, refusal_result

from .runs import DIGEST, make_run

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


def test_one_sources_violations_count_once_within_the_window(breaker: Breaker) -> None:
    """A gateway names each run's client: one client's inputs that hit a limit, however
    many, must not open the function's breaker for every client."""
    for offset in range(10):
        breaker.record("function:f", "t", violated=True, now=T0 + offset, source="10.0.0.1")
    breaker.record("function:f", "t", violated=True, now=T0 + 10, source="10.0.0.2")
    assert breaker.check("function:f", "t", now=T0 + 11).allowed
    breaker.record("function:f", "t", violated=True, now=T0 + 12, source="10.0.0.3")
    assert not breaker.check("function:f", "t", now=T0 + 13).allowed
    # A run that names no client (`stockade run`, the sandbox) counts every time.
    for offset in range(3):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    assert not breaker.check(DIGEST, now=T0 + 3).allowed


def test_a_version_2_database_keeps_its_breakers(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "breaker.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE breakers (key TEXT NOT NULL, tenant TEXT NOT NULL, state TEXT NOT NULL,
          opened_at REAL, until REAL, probe_at REAL, count INTEGER NOT NULL DEFAULT 0,
          trips INTEGER NOT NULL DEFAULT 0, denied INTEGER NOT NULL DEFAULT 0,
          updated REAL NOT NULL, PRIMARY KEY (key, tenant));
        CREATE TABLE violations (key TEXT NOT NULL, tenant TEXT NOT NULL, at REAL);
        CREATE INDEX violations_key ON violations (key, tenant, at);
        PRAGMA user_version = 2;""")
    until = time.time() + 600
    db.execute("INSERT INTO breakers VALUES ('function:f', 't', 'open', ?, ?, NULL, 3, 1, 0, ?)",
               (until - 630, until, until - 630))
    db.execute("INSERT INTO violations VALUES ('function:g', 't', ?)", (time.time(),))
    db.commit()
    db.close()
    with Breaker(path, BreakerConfig(threshold=2, window=60, cooldown=30)) as breaker:
        assert not breaker.check("function:f", "t").allowed  # still open
        breaker.record("function:g", "t", violated=True, source="10.0.0.1")
        assert not breaker.check("function:g", "t").allowed  # the old row still counts


def test_a_newer_versions_database_is_used_not_wiped(tmp_path: Path) -> None:
    """A rolling upgrade runs two versions on one breaker.db: the older must not drop the
    newer one's tables (every breaker closed at once) nor fail on a column it does not
    know."""
    import sqlite3

    path = tmp_path / "breaker.db"
    with Breaker(path, BreakerConfig(threshold=1, window=60, cooldown=600)) as breaker:
        breaker.record("function:f", "t", violated=True, source="10.0.0.1")
    db = sqlite3.connect(path)
    db.executescript("ALTER TABLE violations ADD COLUMN weight REAL;"
                     "ALTER TABLE breakers ADD COLUMN note TEXT; PRAGMA user_version = 99;")
    db.close()
    with Breaker(path, BreakerConfig(threshold=2, window=60, cooldown=600)) as breaker:
        assert not breaker.check("function:f", "t").allowed  # still open
        breaker.record("function:g", "t", violated=True, source="10.0.0.1")
        breaker.record("function:g", "t", violated=True, source="10.0.0.2")
        assert not breaker.check("function:g", "t").allowed
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    db.close()


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


def test_a_probe_from_a_client_already_counted_proves_nothing(breaker: Breaker) -> None:
    """Attack: three addresses open the breaker, then one of them takes every half-open
    probe and violates again, re-opening it each cooldown for everyone. A client whose
    violation is already counted within the window tells nothing new: its probe is freed
    and the breaker stays half-open for the next request; a new client's violation, or
    a clean probe from anyone, still decides."""
    for offset, source in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.3")):
        breaker.record("function:f", "t", violated=True, now=T0 + offset, source=source)
    # What the gateway asks before it lets a probe run (it refuses counted clients).
    assert breaker.counted("function:f", "t", "10.0.0.1", now=T0 + 40)
    assert not breaker.counted("function:f", "t", "10.0.0.4", now=T0 + 40)
    assert not breaker.counted("function:f", "u", "10.0.0.1", now=T0 + 40)
    # Remembered a cooldown past the window: the clients that opened the breaker are all
    # still counted when it half-opens, not only the latest.
    assert breaker.counted("function:f", "t", "10.0.0.1", now=T0 + 89)
    assert not breaker.counted("function:f", "t", "10.0.0.1", now=T0 + 91)
    assert breaker.check("function:f", "t", now=T0 + 40, holder="a").probe
    assert breaker.record("function:f", "t", violated=True, now=T0 + 41, holder="a",
                          source="10.0.0.1") is None
    [entry] = breaker.entries(now=T0 + 42)
    assert entry.state == "half_open" and entry.violations == 3
    probe = breaker.check("function:f", "t", now=T0 + 42, holder="b")
    assert probe.allowed and probe.probe, "the known client's probe was not freed"
    # A client not yet counted is evidence: its violating probe re-opens the breaker.
    change = breaker.record("function:f", "t", violated=True, now=T0 + 43, holder="b",
                            source="10.0.0.4")
    assert change is not None and (change.old, change.new) == ("half_open", "open")
    assert change.until == T0 + 73
    # Once that client's violation is forgotten, its probe counts again.
    assert breaker.check("function:f", "t", now=T0 + 140, holder="c").probe
    change = breaker.record("function:f", "t", violated=True, now=T0 + 141, holder="c",
                            source="10.0.0.1")
    assert change is not None and change.new == "open"
    # And a clean probe closes it, whoever sent it.
    assert breaker.check("function:f", "t", now=T0 + 180, holder="d").probe
    change = breaker.record("function:f", "t", violated=False, now=T0 + 181, holder="d",
                            source="10.0.0.4")
    assert change is not None and change.new == "closed"


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
        assert [e.key for e in removed] == [DIGEST]
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


def test_limits_count_and_traps_only_when_asked() -> None:
    config = BreakerConfig()
    limits = [Outcome.TIMEOUT, Outcome.FUEL_EXHAUSTED, Outcome.MEMORY_LIMIT,
              Outcome.OUTPUT_LIMIT, Outcome.DISK_QUOTA, Outcome.FILE_QUOTA, Outcome.FD_QUOTA,
              Outcome.HOSTCALL_LIMIT]
    assert all(config.counts(outcome) for outcome in limits)
    # A client who can make a function trap (bad input) must not take it offline.
    assert not config.counts(Outcome.TRAP)
    # A refusal is denied: never a violation of its own, or a breaker would feed itself.
    assert not any(config.counts(o) for o in (Outcome.DENIED, Outcome.ERROR, Outcome.EXITED))
    assert config._replace(count_traps=True).counts(Outcome.TRAP)
    assert BreakerConfig.from_env({"STOCKADE_BREAKER_TRAPS": "on"}).count_traps
    with pytest.raises(UsageError, match="STOCKADE_BREAKER_TRAPS"):
        BreakerConfig.from_env({"STOCKADE_BREAKER_TRAPS": "sometimes"})


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def finish(telemetry: Any, outcome: Outcome, tenant: str | None = None) -> None:
    info, result = make_run(outcome, tenant=tenant)
    telemetry.observer.run_finished(info, result)


def test_three_traps_do_not_open_it_three_limit_hits_do(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        for _ in range(3):
            finish(telemetry, Outcome.TRAP)
        assert telemetry.admit("m.wasm", DIGEST).allowed
        for _ in range(3):
            finish(telemetry, Outcome.MEMORY_LIMIT)
        assert not telemetry.admit("m.wasm", DIGEST).allowed
    # The traps are still audited as violations; they just do not open the breaker.
    kinds = [r["kind"] for r in audit(tmp_path / "state")]
    assert kinds == ["violation"] * 6 + ["breaker_transition"]


def test_traps_count_when_the_setting_says_so(tmp_path: Path) -> None:
    config = BreakerConfig(count_traps=True)
    with open_telemetry(breaker_config=config) as telemetry:
        for _ in range(3):
            finish(telemetry, Outcome.TRAP)
        assert not telemetry.admit("m.wasm", DIGEST).allowed


def _open_then_cool(telemetry: Any) -> None:
    for _ in range(3):
        finish(telemetry, Outcome.TIMEOUT)
    time.sleep(0.3)  # the cooldown


def test_a_probe_that_raises_is_a_failed_probe(tmp_path: Path) -> None:
    config = BreakerConfig(cooldown=0.2)
    with open_telemetry(breaker_config=config) as telemetry, Sandbox(
            observers=(telemetry.observer,)) as sandbox:
        _open_then_cool(telemetry)
        invocation = Invocation()
        probe = telemetry.admit("m.wasm", DIGEST, invocation)
        assert probe.allowed and probe.probe
        with pytest.raises(ModuleNotFound):  # the run raises instead of returning a Result
            try:
                sandbox.run(tmp_path / "gone.wasm", invocation)
            except BaseException:
                telemetry.run_failed(DIGEST, invocation)
                raise
        decision = telemetry.admit("m.wasm", DIGEST, invocation)
        # Open again, with a new cooldown: not half-open for `probe_timeout` (300 s).
        assert not decision.allowed and decision.state == "open"
        assert decision.until is not None and decision.until - time.time() <= 0.2
    changes = [(r["old"], r["new"]) for r in audit(tmp_path / "state")
               if r["kind"] == "breaker_transition"]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


def test_a_probe_ending_in_an_internal_error_is_a_failed_probe(tmp_path: Path) -> None:
    with open_telemetry(breaker_config=BreakerConfig(cooldown=0.2)) as telemetry:
        _open_then_cool(telemetry)
        probe = Invocation()
        assert telemetry.admit("m.wasm", DIGEST, probe).probe
        telemetry.observer.run_finished(*_run_of(probe, Outcome.ERROR))
        assert telemetry.admit("m.wasm", DIGEST).state == "open"


def test_an_error_outside_a_probe_is_not_counted(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        for _ in range(5):
            finish(telemetry, Outcome.ERROR)
        assert telemetry.admit("m.wasm", DIGEST).allowed


def test_refusals_are_counted_not_audited_one_by_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_telemetry(breaker_config=BreakerConfig(cooldown=3600)) as telemetry:
        for _ in range(3):
            finish(telemetry, Outcome.TIMEOUT)
        size = (state / "audit.jsonl").stat().st_size
        for _ in range(3000):
            assert not telemetry.admit("m.wasm", DIGEST).allowed
        assert (state / "audit.jsonl").stat().st_size == size
        (entry,) = telemetry.breaker.entries()
        assert entry.denied == 3000
        # The transition that ends the open period reports them, in one record.
        assert telemetry.breaker.check(DIGEST, now=time.time() + 3601).probe
    last = audit(state)[-1]
    assert (last["old"], last["new"], last["denied"]) == ("open", "half_open", 3000)
    assert "3000 runs refused" in last["message"]


def test_refusal_counts_from_every_process_add_up(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    seen: list[Transition] = []
    with Breaker(path, BreakerConfig(cooldown=3600), seen.append) as first, \
            Breaker(path, BreakerConfig(cooldown=3600)) as second:
        for _ in range(3):
            first.record(DIGEST, None, violated=True, now=T0)
        for _ in range(10):
            assert not first.check(DIGEST, now=T0 + 1).allowed
            assert not second.check(DIGEST, now=T0 + 1).allowed
        second.close()  # writes its pending count
        probe = first.check(DIGEST, now=T0 + 3601)
    assert probe.probe and seen[-1].new == "half_open" and seen[-1].denied == 20
    with Breaker(path) as again:
        (entry,) = again.entries(now=T0 + 3601)
    assert entry.denied == 0  # taken by the transition


def test_breakers_are_keyed_by_what_the_invocation_names(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        for _ in range(3):
            info, result = make_run(Outcome.TIMEOUT, tenant="t")
            info = dataclasses.replace(
                info, invocation=Invocation(tenant="t", breaker="function:f"))
            telemetry.observer.run_finished(info, result)
        named = Invocation(tenant="t", breaker="function:f")
        # Another module digest under the same function name: still refused.
        assert not telemetry.admit("other.wasm", "cd" * 32, named).allowed
        assert telemetry.admit("m.wasm", DIGEST, Invocation(tenant="t")).allowed
        assert telemetry.admit("m.wasm", DIGEST, Invocation(
            tenant="u", breaker="function:f")).allowed
        (entry,) = telemetry.breaker.entries()
        assert (entry.key, entry.tenant) == ("function:f", "t")


def test_telemetry_off_keeps_breakers_and_audit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_telemetry("off") as telemetry:
        assert telemetry.monitor is None  # nothing to report to
        for _ in range(3):
            finish(telemetry, Outcome.FUEL_EXHAUSTED)
        assert not telemetry.admit("m.wasm", DIGEST).allowed
    assert not (state / "telemetry.jsonl").exists()
    assert [r["kind"] for r in audit(state)] == ["violation"] * 3 + ["breaker_transition"]


def test_breakers_and_audit_have_their_own_switches(tmp_path: Path) -> None:
    with open_telemetry(breaker=False, audit=False) as telemetry:
        for _ in range(3):
            finish(telemetry, Outcome.FUEL_EXHAUSTED)
        assert telemetry.admit("m.wasm", DIGEST).state == "disabled"
    assert not (tmp_path / "state" / "audit.jsonl").exists()
    assert not (tmp_path / "state" / "breaker.db").exists()


# -- across processes: one SQLite file, real processes started at once ----------------

def _contend(path: str, barrier: Any, results: Any, rounds: int) -> None:
    config = BreakerConfig(threshold=3, window=600, cooldown=600)
    opened = admitted = 0
    with Breaker(path, config) as breaker:
        barrier.wait()
        for _ in range(rounds):
            if breaker.check(DIGEST).allowed:
                admitted += 1
                change = breaker.record(DIGEST, None, violated=True)
                opened += change is not None and change.new == "open"
    results.put((admitted, opened))


def test_ten_processes_count_exactly_and_open_it_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    Breaker(path).close()  # the schema, before the race
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(10), context.Queue()
    workers = [context.Process(target=_contend, args=(path, barrier, results, 5))
               for _ in range(10)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    admitted = sum(a for a, _ in outcomes)
    with Breaker(path, BreakerConfig(window=600)) as breaker:
        (entry,) = breaker.entries()
    # Every admitted run's violation is counted, none lost; the breaker opened once.
    assert entry.violations == admitted and entry.trips == 1
    assert sum(o for _, o in outcomes) == 1
    assert entry.denied == 50 - admitted  # and every refusal counted, none lost
    # Runs already admitted when it opened finish; nothing is admitted after it opened.
    assert 3 <= admitted < 50


def _probe(path: str, barrier: Any, results: Any) -> None:
    with Breaker(path, BreakerConfig(threshold=3, window=600, cooldown=0.5)) as breaker:
        barrier.wait()
        results.put(breaker.check(DIGEST).probe)


def test_ten_processes_at_half_open_let_exactly_one_probe_through(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    with Breaker(path, BreakerConfig(threshold=3, window=600, cooldown=0.5)) as breaker:
        for _ in range(3):
            breaker.record(DIGEST, None, violated=True)
    time.sleep(0.6)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(10), context.Queue()
    workers = [context.Process(target=_probe, args=(path, barrier, results))
               for _ in range(10)]
    for worker in workers:
        worker.start()
    probes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert probes.count(True) == 1


def test_a_run_with_a_real_guest_counts_its_limit(tmp_path: Path) -> None:
    from tests.conftest import guest

    spin = guest("spin.wasm")
    policy = Policy.from_profile("strict").with_limits(fuel=100_000)
    invocation = Invocation(breaker="function:spin")
    with open_telemetry() as telemetry, Sandbox(policy,
                                                observers=(telemetry.observer,)) as sandbox:
        for _ in range(3):
            assert sandbox.run(spin, invocation).outcome is Outcome.FUEL_EXHAUSTED
        assert not telemetry.admit(spin.name, "00" * 32, invocation).allowed


def _open_breaker(path: str) -> str:
    from stockade.telemetry.breaker import Breaker

    Breaker(path).close()
    return "ok"


def test_processes_opening_a_new_database_together_all_start(tmp_path: Path) -> None:
    # The gateway's workers open one new breaker database at the same moment: switching it
    # to WAL answered "database is locked" to one of them, which then failed to start.
    import multiprocessing

    for round_ in range(20):
        path = str(tmp_path / f"breakers-{round_}.db")
        with multiprocessing.get_context("fork").Pool(16) as pool:
            assert pool.map(_open_breaker, [path] * 16) == ["ok"] * 16


def test_a_probe_that_never_ran_is_freed_not_failed(breaker: Breaker) -> None:
    """Attack: a client fills the queue whenever the breaker half-opens, so each probe is
    refused before it runs. Counted as failures, they held the breaker open for ever;
    freed, the next request probes (and only one at a time)."""
    for offset in range(3):
        breaker.record(DIGEST, None, violated=True, now=T0 + offset)
    first = breaker.check(DIGEST, now=T0 + 40)
    assert first.allowed and first.probe
    breaker.probe_unused(DIGEST, None)  # refused by the queue before it started
    second = breaker.check(DIGEST, now=T0 + 41)
    assert second.allowed and second.probe, second.message
    # Freed, never doubled: while the new probe is out, everyone else is refused.
    third = breaker.check(DIGEST, now=T0 + 42)
    assert not third.allowed and third.state == "half_open"
    breaker.probe_unused(DIGEST, None)  # freeing twice frees one probe, no more
    breaker.probe_unused(DIGEST, None)
    assert breaker.check(DIGEST, now=T0 + 43).probe
    assert not breaker.check(DIGEST, now=T0 + 44).allowed
    assert [e.trips for e in breaker.entries(now=T0 + 45)] == [1]


def test_freeing_a_stale_probe_leaves_the_probe_another_process_holds(
        tmp_path: Path) -> None:
    config = BreakerConfig(threshold=1, window=60, cooldown=10, probe_timeout=20)
    path = tmp_path / "breaker.db"
    with Breaker(path, config) as one, Breaker(path, config) as two:
        one.record(DIGEST, None, violated=True, now=T0)
        assert one.check(DIGEST, now=T0 + 11).probe
        # One's probe is given up after probe_timeout: another process takes a new one.
        assert two.check(DIGEST, now=T0 + 40).probe
        one.probe_unused(DIGEST, None)  # too late: not one's probe any more
        assert not one.check(DIGEST, now=T0 + 41).allowed
        assert not two.check(DIGEST, now=T0 + 41).allowed


def _run_of(invocation: Invocation, outcome: Outcome) -> tuple[RunInfo, Result]:
    """A run of `invocation` that ended with `outcome`."""
    info, result = make_run(outcome)
    return RunInfo(info.module, info.sha256, invocation, info.policy, info.started,
                   info.pid), result


def test_only_the_probes_own_run_moves_a_half_open_breaker(tmp_path: Path) -> None:
    """Attack: a run admitted while the breaker was closed (or trusted closed) ends while
    the half-open probe is out. Its clean end closed the breaker of a function whose probe
    then failed; its violation re-opened it and threw the probe away (half-open, refusing
    everyone, until `probe_timeout`). Only the probe's own end may move the breaker."""
    with open_telemetry(breaker_config=BreakerConfig(cooldown=0.2)) as telemetry:
        ordinary, late = Invocation(), Invocation()
        _open_then_cool(telemetry)
        probe = Invocation()
        assert telemetry.admit("m.wasm", DIGEST, probe).probe
        telemetry.observer.run_finished(*_run_of(ordinary, Outcome.EXITED))
        decision = telemetry.admit("m.wasm", DIGEST)
        assert not decision.allowed and decision.state == "half_open", decision
        telemetry.observer.run_finished(*_run_of(late, Outcome.TIMEOUT))
        telemetry.observer.run_finished(*_run_of(late, Outcome.ERROR))
        decision = telemetry.admit("m.wasm", DIGEST)
        assert not decision.allowed and decision.state == "half_open", decision
        # The probe's own end decides: it failed, so the breaker opens again.
        telemetry.observer.run_finished(*_run_of(probe, Outcome.TIMEOUT))
        decision = telemetry.admit("m.wasm", DIGEST)
        assert not decision.allowed and decision.state == "open", decision
        time.sleep(0.3)
        second = Invocation()
        assert telemetry.admit("m.wasm", DIGEST, second).probe
        telemetry.observer.run_finished(*_run_of(second, Outcome.EXITED))
        assert telemetry.admit("m.wasm", DIGEST).state == "closed"

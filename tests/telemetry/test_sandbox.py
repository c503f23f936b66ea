"""Telemetry around the real sandbox: real guests, the file, the breaker, the monitor."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.telemetry import Telemetry, open_telemetry, read_summary, refusal_result
from stockade.telemetry.record import MONITOR_WARNING
from tests.conftest import guest, stockade


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def guarded_run(telemetry: Telemetry, sandbox: Sandbox, module: Path,
                invocation: Invocation) -> tuple[bool, Outcome]:
    """What the CLI does: ask the breaker, then run (or render the refusal)."""
    decision = telemetry.admit(module.name, digest(module), invocation, sandbox.policy)
    if not decision.allowed:
        return False, refusal_result(decision, module.name, digest(module)).outcome
    return True, sandbox.run(module, invocation).outcome


def test_hello_is_recorded_and_shown(tmp_path: Path) -> None:
    hello = guest("hello.wasm")
    metered = Policy.from_profile("default").with_limits(fuel=10**9)  # a budget: fuel counted
    with open_telemetry() as telemetry, \
            Sandbox(metered, observers=(telemetry.observer,)) as sandbox:
        result = sandbox.run(hello, Invocation(args=("world",), name="hello"))
    assert result.outcome is Outcome.EXITED
    assert result.usage.fuel_consumed is not None
    summary = read_summary(tmp_path / "state" / "telemetry.jsonl")
    (row,) = summary.recent
    assert (row.name, row.outcome, row.sha256) == ("hello", "exited", digest(hello))
    line = json.loads((tmp_path / "state" / "telemetry.jsonl").read_text().splitlines()[0])
    span = line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert int(attrs["stockade.fuel.consumed"]["intValue"]) == result.usage.fuel_consumed > 0
    assert int(attrs["stockade.memory.peak"]["intValue"]) == result.usage.peak_memory_bytes
    proc = stockade("telemetry", "show")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "1 invocations" in text and "exited" in text and "hello" in text
    shown = json.loads(stockade("telemetry", "show", "--json").stdout)
    assert shown["invocations"] == 1 and shown["outcomes"] == {"exited": 1}


def test_breaker_refuses_a_module_that_keeps_violating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BREAKER_COOLDOWN", "300ms")
    spin = guest("spin.wasm")
    policy = Policy.from_profile("strict").with_limits(fuel=100_000)
    with open_telemetry() as telemetry, Sandbox(policy,
                                                observers=(telemetry.observer,)) as sandbox:
        outcomes = [guarded_run(telemetry, sandbox, spin, Invocation()) for _ in range(4)]
        assert outcomes == [(True, Outcome.FUEL_EXHAUSTED)] * 3 + [(False, Outcome.DENIED)]
        time.sleep(0.35)  # the cooldown
        probe = guarded_run(telemetry, sandbox, spin, Invocation(args=("1000",)))
        assert probe == (True, Outcome.EXITED)
        assert guarded_run(telemetry, sandbox, spin, Invocation(args=("1000",)))[0]
    proc = stockade("audit", "verify")
    assert proc.returncode == 0 and b"intact: 6 records" in proc.stdout
    kinds = [json.loads(line)["kind"]
             for line in Path(telemetry.audit.path).read_text().splitlines()]
    # The refusal is not a record of its own: the next transition counts it.
    assert kinds == ["violation"] * 3 + ["breaker_transition"] * 3


def test_monitor_warns_while_a_real_guest_spins() -> None:
    policy = Policy.from_profile("strict").with_limits(fuel=None, timeout=1.0)
    with open_telemetry() as telemetry, Sandbox(policy,
                                                observers=(telemetry.observer,)) as sandbox:
        result = sandbox.run(guest("spin.wasm"), Invocation())
    assert result.outcome is Outcome.TIMEOUT
    summary = read_summary(telemetry.settings.file)
    assert summary.recent[0].warnings >= 1 and summary.warnings >= 1
    records = [json.loads(line) for line in telemetry.settings.file.read_text().splitlines()]
    logs = [r for line in records for rl in line.get("resourceLogs", ())
            for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert any(r["eventName"] == MONITOR_WARNING for r in logs)
    assert any(r["eventName"] == "stockade.audit.violation" for r in logs)


def test_monitor_watches_an_isolated_worker() -> None:
    from stockade.isolate import make_sandbox

    policy = Policy.from_profile("strict").with_limits(fuel=None, timeout=1.0)
    with open_telemetry() as telemetry, make_sandbox(
            policy, "process", observers=(telemetry.observer,)) as sandbox:
        result = sandbox.run(guest("spin.wasm"), Invocation())
    assert result.outcome is Outcome.TIMEOUT
    (row,) = read_summary(telemetry.settings.file).recent
    assert row.warnings >= 1 and row.limit_hit == "timeout"

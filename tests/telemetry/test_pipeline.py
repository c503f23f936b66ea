"""`Telemetry` as the CLI and gateway use it: observer, admit, audit, breaker, close."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest

from stockade.errors import UsageError
from stockade.invocation import Invocation
from stockade.policy import Policy
from stockade.result import Outcome, Usage
from stockade.telemetry import event_kind, open_telemetry, read_summary, verify
from stockade.telemetry.record import ParentContext

from .runs import DIGEST, make_run

MiB = 1024**2


def audit_kinds(path: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()]


def test_three_violations_open_the_breaker_and_the_refusal_is_recorded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_telemetry() as telemetry:
        for _ in range(3):
            assert telemetry.admit("bad.wasm", DIGEST).allowed
            info, result = make_run(Outcome.FUEL_EXHAUSTED, name="bad")
            telemetry.observer.run_started(info)
            telemetry.observer.run_finished(info, result)
        decision = telemetry.admit("bad.wasm", DIGEST)
        assert not decision.allowed and str(decision.until_iso) in decision.message
    # The refusal is counted by the breaker, not audited on its own.
    assert audit_kinds(state / "audit.jsonl") == [
        "violation", "violation", "violation", "breaker_transition"]
    assert verify(state / "audit.jsonl").ok
    summary = read_summary(state / "telemetry.jsonl")
    assert summary.outcomes == {"fuel_exhausted": 3, "denied": 1}
    assert summary.recent[0].limit_hit == "breaker"
    with open_telemetry() as again:  # a new process sees the open breaker
        assert not again.admit("bad.wasm", DIGEST).allowed
        (entry,) = again.breaker.entries()
        assert entry.violations == 3  # the refusals did not count as violations


@pytest.mark.parametrize("name, value", [
    ("STOCKADE_AUDIT_MAX_BYTES", "abc"), ("STOCKADE_AUDIT_MAX_BYTES", "1500"),
    ("STOCKADE_BREAKER_THRESHOLD", "abc"), ("STOCKADE_BREAKER_COOLDOWN", "soon"),
])
def test_malformed_breaker_and_audit_settings_are_refused_when_telemetry_opens(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    # Read at a run's first violation, they cost its audit record and breaker count,
    # with nothing said: `stockade run --breaker` ran on unguarded.
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=name):
        open_telemetry()


def test_an_audit_log_that_cannot_be_opened_still_lets_the_breaker_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The audit log is made at the first violation; its failure to open was reported by
    # opening it again in the handler, which raised past the breaker's count, unheard.
    # A key kept beside the log is refused at the first append, not when telemetry opens.
    monkeypatch.setenv("STOCKADE_AUDIT_KEY", str(tmp_path / "state" / "audit.key"))
    with open_telemetry() as telemetry:
        for _ in range(3):
            info, result = make_run(Outcome.TIMEOUT)
            telemetry.observer.run_finished(info, result)
        assert not telemetry.admit("m.wasm", DIGEST).allowed
    assert "could not write the audit log" in caplog.text
    assert "lies beside the audit log" in caplog.text
    assert not (tmp_path / "state" / "audit.jsonl").exists()


def test_audit_kinds_by_outcome() -> None:
    assert event_kind(Outcome.DENIED) == "denial"
    assert event_kind(Outcome.DISK_QUOTA) == "quota_hit"
    assert event_kind(Outcome.MEMORY_LIMIT) == "violation"
    assert event_kind(Outcome.EXITED) is None and event_kind(Outcome.ERROR) is None


def test_monitor_warnings_become_span_events_and_log_records(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        info, result = make_run(policy=Policy().with_limits(max_memory=16 * MiB),
                                usage=Usage(wall_ms=2, cpu_ms=1,
                                            peak_memory_bytes=16 * MiB - 65536))
        telemetry.observer.run_started(info)
        telemetry.observer.run_finished(info, result)
    lines = [json.loads(x) for x in (tmp_path / "state" / "telemetry.jsonl").read_text()
             .splitlines()]
    span = lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert [e["name"] for e in span["events"]] == ["stockade.monitor.warning"]
    logs = lines[2]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert logs[0]["severityText"] == "WARN" and logs[0]["traceId"] == span["traceId"]
    assert read_summary(tmp_path / "state" / "telemetry.jsonl").warnings == 1
    assert not (tmp_path / "state" / "audit.jsonl").exists()  # a warning is no violation


def test_telemetry_off_writes_no_file_but_keeps_the_breaker(tmp_path: Path) -> None:
    with open_telemetry("off") as telemetry:
        for _ in range(3):
            info, result = make_run(Outcome.TIMEOUT)
            telemetry.observer.run_finished(info, result)
        assert not telemetry.admit("m.wasm", DIGEST).allowed
    assert not (tmp_path / "state" / "telemetry.jsonl").exists()


def test_failures_are_logged_not_raised(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    (state / "telemetry.jsonl").mkdir(parents=True)  # directories where files should be
    (state / "breaker.db").mkdir()
    with caplog.at_level(logging.WARNING, "stockade.telemetry"):
        with open_telemetry() as telemetry:
            decision = telemetry.admit("m.wasm", DIGEST)
            info, result = make_run(Outcome.TIMEOUT)
            telemetry.observer.run_finished(info, result)
    assert decision.allowed and decision.state == "unknown"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "circuit breaker unavailable" in messages
    assert "could not record run telemetry" in messages
    assert "could not write the telemetry file" in messages


def test_close_twice_is_safe() -> None:
    telemetry = open_telemetry()
    telemetry.close()
    telemetry.close()


def test_an_unsampled_clean_run_is_counted_without_a_span(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick path for a clean run whose trace is not sampled writes no span and the
    same metrics as the full record would, without building that record."""
    import stockade.telemetry.pipeline as pipeline

    built = []
    full_record = pipeline.InvocationRecord.build
    monkeypatch.setattr(pipeline.InvocationRecord, "build", classmethod(
        lambda cls, info, result, end_ns=None: built.append(info) or full_record(info, result)))

    @dataclasses.dataclass(frozen=True)
    class Child(Invocation):
        parent: ParentContext | None = None

    def metrics(path: Path) -> str:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        found = [line["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                 for line in lines if "resourceMetrics" in line]
        return re.sub(r'"(start)?[tT]imeUnixNano": "\d+"', "", json.dumps(found))

    files = {}
    for sampled in (True, False):
        files[sampled] = path = tmp_path / f"{sampled}.jsonl"
        with open_telemetry("edge", env={"STOCKADE_TELEMETRY_FILE": str(path)}) as telemetry:
            for _ in range(3):
                info, result = make_run()
                info = dataclasses.replace(info, invocation=Child(
                    name="hello", parent=ParentContext(5, 6, sampled)))
                telemetry.observer.run_finished(info, result)
    assert len(built) == 3  # the sampled runs only
    assert '"resourceSpans"' in files[True].read_text()
    assert '"resourceSpans"' not in files[False].read_text()
    assert '"asInt": "3"' in metrics(files[False])
    assert metrics(files[True]) == metrics(files[False])

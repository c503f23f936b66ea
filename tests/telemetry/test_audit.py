"""The audit log's hash chain: intact logs verify, any edit is found and named."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from stockade.telemetry import AuditLog, verify


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for number in range(5):
        audit.append("violation", f"timeout #{number}", module="m.wasm", outcome="timeout")
    return audit


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_records_are_chained(log: AuditLog) -> None:
    records = [json.loads(line) for line in lines(log.path)]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:], strict=False))
    report = verify(log.path)
    assert report.ok and report.records == 5 and str(report) == "audit log intact: 5 records"


def test_a_changed_record_is_named(log: AuditLog) -> None:
    content = lines(log.path)
    content[2] = content[2].replace("timeout #2", "all fine")
    log.path.write_text("".join(content))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (3, 3)
    assert "changed" in report.problem and "line 3 (seq 3)" in str(report)


def test_a_rehashed_change_still_breaks_the_chain(log: AuditLog) -> None:
    from stockade.telemetry.audit import record_hash

    content = lines(log.path)
    record: dict[str, Any] = json.loads(content[1])
    record["message"] = "nothing happened"
    record["hash"] = record_hash(record)
    content[1] = json.dumps(record) + "\n"
    log.path.write_text("".join(content))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (3, 3)
    assert "chain" in report.problem


def test_a_removed_record_is_found(log: AuditLog) -> None:
    content = lines(log.path)
    del content[1]
    log.path.write_text("".join(content))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (2, 3)
    assert "removed or reordered" in report.problem


def test_reordered_records_are_found(log: AuditLog) -> None:
    content = lines(log.path)
    content[3], content[4] = content[4], content[3]
    log.path.write_text("".join(content))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (4, 5)


def test_records_cut_off_the_end_are_found(log: AuditLog) -> None:
    log.path.write_text("".join(lines(log.path)[:3]))
    report = verify(log.path)
    assert not report.ok and report.seq == 5 and "removed from the end" in report.problem


def test_a_missing_log_is_empty_and_intact(tmp_path: Path) -> None:
    assert verify(tmp_path / "none.jsonl").ok


def test_each_record_is_emitted(tmp_path: Path) -> None:
    emitted: list[dict[str, Any]] = []
    audit = AuditLog(tmp_path / "a.jsonl", emit=emitted.append)
    record = audit.append("denial", "import wasix_32v1.sock_open denied", tenant=None)
    assert emitted == [record] and "tenant" not in record


def _append(path: str, count: int) -> None:
    audit = AuditLog(path)
    for number in range(count):
        audit.append("quota_hit", f"quota {number}")


def test_processes_append_to_one_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(path, 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    report = verify(path)
    assert report.ok and report.records == 120

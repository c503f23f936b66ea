"""The audit log as an attacker who can write the state directory sees it: every edit,
cut, deletion or forgery is found and named, appends never paper over damage, the
chain is keyed with a key kept elsewhere, and rotation keeps it whole."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from stockade.errors import UsageError
from stockade.telemetry import AuditLog, verify
from stockade.telemetry.audit import audit_key_path, record_hash
from tests.conftest import guest, stockade


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


def test_records_are_chained_and_keyed(log: AuditLog) -> None:
    written = records(log.path)
    assert [r["seq"] for r in written] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in zip(written, written[1:], strict=False))
    # The hash is an HMAC: recomputing it without the key gives something else.
    assert all(r["hash"] != record_hash(r) for r in written)
    report = verify(log.path)
    assert report.ok and report.records == 5 and str(report) == "audit log intact: 5 records"


def test_the_key_is_private_and_outside_the_state_dir(log: AuditLog, tmp_path: Path) -> None:
    key = audit_key_path()
    assert key == tmp_path / "config" / "stockade" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(key.read_bytes()) == 32 and not key.is_relative_to(log.path.parent)


def test_a_changed_record_is_named(log: AuditLog) -> None:
    content = lines(log.path)
    content[2] = content[2].replace("timeout #2", "all fine")
    log.path.write_text("".join(content))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (3, 3)
    assert "changed" in report.problem and "line 3 (seq 3)" in str(report)


def test_a_rewritten_history_with_recomputed_unkeyed_hashes_fails(log: AuditLog) -> None:
    # The attacker rewrites record 2 and recomputes every hash and link after it, as the
    # old unkeyed chain allowed; without the key the hashes cannot be right.
    written = records(log.path)
    written[1]["message"] = "nothing happened"
    prev = written[0]["hash"]
    for record in written[1:]:
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
    log.path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in written))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (2, 2)
    assert "audit key" in report.problem


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


def test_an_append_after_a_cut_tail_writes_a_tamper_record(log: AuditLog) -> None:
    log.path.write_text("".join(lines(log.path)[:3]))
    log.append("violation", "the next ordinary event")
    written = records(log.path)
    assert [r["kind"] for r in written[3:]] == ["tamper", "violation"]
    tamper = written[3]
    assert (tamper["expected_seq"], tamper["found_seq"]) == (5, 3)
    assert "removed from the end" in tamper["message"]
    report = verify(log.path)  # the append did not re-anchor the chain: still broken
    assert not report.ok and (report.line, report.seq) == (4, 4)
    assert "tampering" in report.problem
    log.append("violation", "and another")
    assert not verify(log.path).ok


def test_a_deleted_log_with_its_head_left_fails(log: AuditLog) -> None:
    log.path.unlink()
    report = verify(log.path)
    assert not report.ok and report.seq == 5 and "deleted" in report.problem
    proc = stockade("audit", "verify", str(log.path))
    assert proc.returncode == 1 and b"deleted" in proc.stderr and b"Traceback" not in proc.stderr
    log.append("violation", "after the deletion")
    (tamper, after) = records(log.path)
    assert tamper["kind"] == "tamper" and tamper["expected_seq"] == 5
    assert after["prev"] == tamper["hash"] and not verify(log.path).ok


def test_a_deleted_head_fails(log: AuditLog) -> None:
    log.head_path.unlink()
    report = verify(log.path)
    assert not report.ok and "head is missing" in report.problem
    log.append("violation", "after")
    assert [r["kind"] for r in records(log.path)[-2:]] == ["tamper", "violation"]


def test_a_head_forged_to_match_a_cut_tail_fails(log: AuditLog) -> None:
    content = lines(log.path)
    log.path.write_text("".join(content[:3]))
    third = json.loads(content[2])
    head = json.loads(log.head_path.read_text())
    head.update(seq=3, hash=third["hash"])  # the old mac no longer fits; no key to redo it
    log.head_path.write_text(json.dumps(head))
    report = verify(log.path)
    assert not report.ok and "forged" in report.problem


def test_the_head_may_lag_one_record_after_a_crash(log: AuditLog) -> None:
    head = log.head_path.read_text()
    log.append("violation", "written, then the process died before the head")
    log.head_path.write_text(head)
    assert verify(log.path).ok
    log.append("violation", "the next run")
    assert [r["kind"] for r in records(log.path)][-2:] == ["violation", "violation"]
    assert verify(log.path).ok


def test_a_missing_log_is_empty_and_intact(tmp_path: Path) -> None:
    assert verify(tmp_path / "none.jsonl").ok
    assert not audit_key_path().exists()  # verifying creates no key


def test_a_log_without_its_key_cannot_be_verified(log: AuditLog) -> None:
    audit_key_path().unlink()
    report = verify(log.path)
    assert not report.ok and "audit key" in report.problem and "missing" in report.problem


def test_a_key_others_can_read_is_refused(log: AuditLog) -> None:
    key = audit_key_path()
    key.chmod(0o644)
    fresh = AuditLog(log.path)
    with pytest.raises(UsageError, match="0644"):
        fresh.append("violation", "x")
    with pytest.raises(UsageError, match="0644"):
        verify(log.path)
    proc = stockade("audit", "verify", str(log.path))
    assert proc.returncode == 125 and b"0644" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_a_symlinked_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "elsewhere.key"
    real.write_bytes(os.urandom(32))
    real.chmod(0o600)
    link = tmp_path / "config" / "link.key"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    monkeypatch.setenv("STOCKADE_AUDIT_KEY", str(link))
    with pytest.raises(UsageError, match="symlink"):
        AuditLog(tmp_path / "state" / "audit.jsonl").append("violation", "x")


def test_a_key_beside_the_log_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_AUDIT_KEY", str(tmp_path / "state" / "audit.key"))
    with pytest.raises(UsageError, match="outside the state directory"):
        AuditLog(tmp_path / "state" / "audit.jsonl").append("violation", "x")


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "state" / "audit.jsonl", max_bytes=4096)
    for number in range(60):
        audit.append("quota_hit", f"quota {number}", padding="x" * 100)
    rotated = sorted(audit.path.parent.glob("audit.jsonl.[0-9]*"),
                     key=lambda p: int(p.suffix[1:]))
    assert len(rotated) >= 2
    files = [*rotated, audit.path]
    assert all(f.stat().st_size < 4096 + 512 for f in files)
    for older, newer in zip(files, files[1:], strict=False):
        assert records(newer)[0]["prev"] == records(older)[-1]["hash"]
    report = verify(audit.path)
    assert report.ok and report.records == 60
    # A rotated file removed from the middle breaks the chain, and is named.
    rotated[1].unlink()
    report = verify(audit.path)
    assert not report.ok and "removed" in report.problem


def test_the_newest_rotated_file_cut_is_found_when_the_log_is_fresh(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "state" / "audit.jsonl", max_bytes=4096)
    for number in range(60):
        audit.append("quota_hit", f"quota {number}", padding="x" * 100)
    audit.path.unlink()  # the current file, as if it had just rotated
    report = verify(audit.path)
    assert not report.ok and "removed from the end" in report.problem


def test_each_record_is_emitted(tmp_path: Path) -> None:
    emitted: list[dict[str, Any]] = []
    audit = AuditLog(tmp_path / "a.jsonl", emit=emitted.append)
    record = audit.append("denial", "import wasix_32v1.sock_open denied", tenant=None)
    assert emitted == [record] and "tenant" not in record


def test_a_damaged_last_line_is_chained_to_and_named(log: AuditLog) -> None:
    with open(log.path, "a") as file:
        file.write("{not json\n")
    log.append("violation", "after garbage")
    report = verify(log.path)
    assert not report.ok and report.line == 6 and "not a valid" in report.problem
    assert hashlib.sha256(b"{not json").hexdigest() in log.path.read_text()


def _append(path: str, count: int) -> None:
    audit = AuditLog(path, max_bytes=8192)
    for number in range(count):
        audit.append("quota_hit", f"quota {number}")


def test_processes_append_to_one_chain_across_rotations(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "shared.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(path, 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    report = verify(path)
    assert report.ok and report.records == 120
    assert list(Path(path).parent.glob("shared.jsonl.[0-9]*"))  # it did rotate


def test_a_rollback_to_a_saved_head_is_found(log: AuditLog) -> None:
    # The attacker can write the state directory: save the head at 5 records, let the
    # log grow, then cut it back to 5 lines and put the saved head back.
    saved_head, saved = log.head_path.read_bytes(), log.path.read_bytes()
    for number in range(3):
        log.append("violation", f"later #{number}")
    log.path.write_bytes(saved)
    log.head_path.write_bytes(saved_head)
    report = verify(log.path)
    assert not report.ok and report.records == 5 and "rolled back" in report.problem
    proc = stockade("audit", "verify", str(log.path))
    assert proc.returncode == 1 and b"rolled back" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    log.append("violation", "the next ordinary event")  # does not paper over it
    assert [r["kind"] for r in records(log.path)][-2:] == ["tamper", "violation"]
    assert not verify(log.path).ok


def test_a_fully_erased_log_is_found(log: AuditLog) -> None:
    for each in log.path.parent.glob("audit.jsonl*"):
        each.unlink()
    report = verify(log.path)
    assert not report.ok and "erased" in report.problem
    proc = stockade("audit", "verify", str(log.path))
    assert proc.returncode == 1 and b"erased" in proc.stderr


def test_the_counter_lives_beside_the_key_not_the_log(log: AuditLog) -> None:
    counter = log.counter_path
    assert counter.parent == audit_key_path().parent
    assert not counter.is_relative_to(log.path.parent)
    assert stat.S_IMODE(counter.stat().st_mode) == 0o600
    assert json.loads(counter.read_text())["seq"] == 5


@pytest.mark.parametrize("planted", ["audit.jsonl", "audit.jsonl.head"])
def test_a_fifo_planted_in_the_state_dir_does_not_hang(tmp_path: Path, planted: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.mkfifo(state / planted)
    with pytest.raises(OSError, match="not a regular file"):
        AuditLog(state / "audit.jsonl").append("violation", "x")
    proc = stockade("audit", "verify", str(state / "audit.jsonl"), timeout=30)
    assert proc.returncode in (1, 125) and b"regular file" in proc.stderr
    assert b"Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    # A run whose audit record cannot be written still ends, with its own result.
    run = stockade("run", "--timeout", "1s", str(guest("spin.wasm")), timeout=60)
    assert run.returncode == 124 and b"Traceback" not in run.stderr


def test_the_state_dir_is_private_and_checked(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "fresh" / "state" / "audit.jsonl")
    audit.append("violation", "x")
    assert stat.S_IMODE(audit.path.parent.stat().st_mode) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(UsageError, match="0777"):
        AuditLog(open_dir / "audit.jsonl").append("violation", "x")


def _one_line(proc: Any, code: int, *words: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def test_a_symlink_loop_planted_as_the_log_is_said_and_judged(tmp_path: Path) -> None:
    """`Path.resolve` raised RuntimeError on a link loop planted as the log (naming its
    counter): a run's audit record went without the audit log's "records lost" line,
    and `audit verify` and `check` ended in a traceback (found by review)."""
    state = tmp_path / "state"
    AuditLog(state / "audit.jsonl").append("violation", "before")
    (state / "audit.jsonl").rename(state / "audit.moved")
    (state / "audit.jsonl").symlink_to("audit.jsonl")
    with pytest.raises(OSError):
        AuditLog(state / "audit.jsonl").append("violation", "after")
    report = verify(state / "audit.jsonl")
    assert not report.ok and "symbolic link" in report.problem, report
    run = stockade("run", "--timeout", "1s", str(guest("spin.wasm")), timeout=60)
    assert run.returncode == 124 and b"Traceback" not in run.stderr, run.stderr
    lost = [line for line in run.stderr.decode().splitlines() if "records lost" in line]
    assert len(lost) == 1 and "could not write the audit log" in lost[0], run.stderr
    _one_line(stockade("audit", "verify"), 1, "audit log broken", "symbolic link")
    checked = stockade("check", "--json")
    assert b"Traceback" not in checked.stderr, checked.stderr
    [item] = [i for i in json.loads(checked.stdout)["items"] if i["check"] == "audit log"]
    assert item["status"] == "fail" and "symbolic link" in item["reason"], item


def test_a_state_directory_replaced_by_a_link_is_an_erased_log(tmp_path: Path) -> None:
    """Whoever can write the state directory's parent moved it away and linked another
    private directory in its place: the counter was named after where the link led, so
    there was none, and `verify` said intact, 0 records (found by review)."""
    state = tmp_path / "p" / "state"
    AuditLog(state / "audit.jsonl").append("violation", "one")
    AuditLog(state / "audit.jsonl").append("violation", "two")
    assert verify(state / "audit.jsonl").ok
    state.rename(tmp_path / "p" / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    state.symlink_to(elsewhere)
    report = verify(state / "audit.jsonl")
    assert not report.ok and "erased" in report.problem, report


@pytest.mark.parametrize("target", ["copy", "/dev/zero", "dangling"])
def test_a_symlink_as_the_log_is_a_broken_log(log: AuditLog, tmp_path: Path,
                                              target: str) -> None:
    """A symlink where a log should be was "cannot read" (125, as for no log) and a
    dangling one an intact log of 0 records (0): it is a log replaced (found by
    review)."""
    copy = tmp_path / "copy" / "audit.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(log.path.read_bytes())
    link = tmp_path / "elsewhere" / "audit.jsonl"
    link.parent.mkdir()
    link.symlink_to({"copy": str(copy), "dangling": str(tmp_path / "none")}.get(target, target))
    _one_line(stockade("audit", "verify", str(link)), 1, "broken", "symbolic link")
    log.path.unlink()  # the default log too
    log.path.symlink_to(link.resolve() if target != "dangling" else tmp_path / "none")
    _one_line(stockade("audit", "verify"), 1, "broken", "symbolic link")


def test_a_state_dir_that_cannot_hold_a_log_is_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run there loses its records, yet `verify` said intact: 0 records, exit 0
    (found by review)."""
    monkeypatch.setenv("STOCKADE_STATE_DIR", "/proc/self/nonexist")
    _one_line(stockade("audit", "verify"), 125, "/proc/self/nonexist")
    with pytest.raises(UsageError):
        verify()

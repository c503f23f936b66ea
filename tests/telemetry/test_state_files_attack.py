"""The local records against a full disk and against files planted in the state directory
(found by review): a full disk left half an audit record, which the next append took for
tampering and `verify` for a broken chain for good, and nothing was said; a FIFO planted
as the telemetry file or the environment cache hung every run; a symlink planted as the
telemetry file had runs append to its target; a record with a key written twice verified
while showing a first-wins reader other text; a long last line cost its square."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from stockade.telemetry import AuditLog, Breaker, BreakerConfig, read_summary, verify
from stockade.telemetry import audit as audit_module
from tests.conftest import guest, stockade

from .runs import DIGEST


def test_a_record_the_disk_cuts_short_is_not_left_half_written(log: AuditLog) -> None:
    size = log.path.stat().st_size
    # A file size limit stops a write part way as a full disk does (EFBIG for ENOSPC).
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, limits[1]))
    try:
        with pytest.raises(OSError):
            log.append("violation", "x" * 400, module="m.wasm")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert log.path.stat().st_size == size
    log.append("violation", "after the disk was freed", module="m.wasm")
    report = verify(log.path)
    assert report.ok and report.records == 6, report
    assert [json.loads(line)["kind"] for line in log.path.read_text().splitlines()] \
        == ["violation"] * 6  # no `tamper` record


def test_records_after_a_cut_last_line_start_a_line_of_their_own(log: AuditLog) -> None:
    # The tamper record the next append writes was glued to the cut line, and so was
    # every record after it: the evidence could not be read.
    with log.path.open("r+b") as file:
        file.truncate(log.path.stat().st_size - 50)
    log.append("violation", "after the cut", module="m.wasm")
    lines = log.path.read_bytes().splitlines()
    assert len(lines) == 7
    assert [json.loads(line)["kind"] for line in lines[5:]] == ["tamper", "violation"]
    report = verify(log.path)
    assert not report.ok and report.line == 5, report


def test_telemetry_after_a_cut_last_line_is_read(tmp_path: Path) -> None:
    # The next run's record was glued to the cut line and skipped with it.
    telemetry = tmp_path / "state" / "telemetry.jsonl"
    telemetry.parent.mkdir(mode=0o700)
    telemetry.write_bytes(b'{"resourceSpans": [{"scopeSp')
    done = stockade("run", str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr
    summary = read_summary(telemetry)
    assert summary.spans == 1 and summary.bad_lines == 1, summary


def test_a_record_with_a_key_written_twice_is_broken(log: AuditLog) -> None:
    lines = log.path.read_text().splitlines(keepends=True)
    # First-wins readers see "benign"; the hash covers the last "kind" only.
    lines[1] = lines[1].replace('{"seq":2,', '{"kind":"breaker_reset","seq":2,', 1)
    log.path.write_text("".join(lines))
    report = verify(log.path)
    assert not report.ok and (report.line, report.seq) == (2, 2), report
    assert "not as it was written" in report.problem


def test_a_reformatted_record_is_broken(log: AuditLog) -> None:
    lines = log.path.read_text().splitlines(keepends=True)
    lines[0] = json.dumps(json.loads(lines[0])) + "\r\n"
    log.path.write_text("".join(lines))
    report = verify(log.path)
    assert not report.ok and report.line == 1, report


def test_a_long_last_line_is_read_once(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    with log.path.open("ab") as file:
        file.write(b"g" * (8 << 20))  # no newline: one line of 8 MiB
    read = []
    real_pread = os.pread

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        read.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(audit_module.os, "pread", counting_pread)
    log.append("violation", "after garbage", module="m.wasm")
    # At most the bound on a line, not the whole tail (nor its square in copies).
    assert sum(read) <= 2 * audit_module._TAIL_MAX, sum(read)  # noqa: SLF001
    report = verify(log.path)
    assert not report.ok  # the garbage is found, and named


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("planted", ["telemetry.jsonl", "environment.json"])
def test_a_fifo_planted_in_the_state_directory_does_not_hang_a_run(
        tmp_path: Path, planted: str) -> None:
    _fifo(tmp_path / "state" / planted)
    try:
        ran = stockade("run", str(guest("hello.wasm")), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a FIFO planted as {planted} hung `stockade run`")
    assert ran.returncode == 0, ran.stderr
    assert b"Traceback" not in ran.stderr


def test_a_symlink_planted_as_the_telemetry_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "telemetry.jsonl").symlink_to(victim)
    ran = stockade("run", str(guest("hello.wasm")))
    assert ran.returncode == 0, ran.stderr
    assert victim.read_text() == "precious\n"
    assert b"could not write the telemetry file" in ran.stderr, ran.stderr


def test_a_full_disk_is_said_and_leaves_the_chain_whole(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the state directory needs root")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        filler = state / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while os.write(fd, b"f" * 512):
                    pass
        finally:
            os.close(fd)
        first = stockade("run", str(guest("trap.wasm")))
        second = stockade("run", str(guest("trap.wasm")))
        filler.unlink()
        third = stockade("run", str(guest("trap.wasm")))
        verified = stockade("audit", "verify", str(state / "audit.jsonl"))
    finally:
        subprocess.run(["umount", str(state)], check=False)
    for ran in (first, second, third):
        assert ran.returncode == 134, ran.stderr  # the run's own verdict, unchanged
        assert b"Traceback" not in ran.stderr
    assert b"could not write the audit log" in first.stderr, first.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert b"intact: 1 record" in verified.stdout + verified.stderr


def test_a_breaker_database_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    """`stockade breaker` ended in an sqlite3 traceback, and `run --breaker` let every
    run through without a word (found by review)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "breaker.db").write_bytes(b"garbage, not a database\n" * 100)
    for args in (("breaker", "list"), ("breaker", "list", "--json"), ("breaker", "reset", "--all")):
        refused = stockade(*args)
        lines = refused.stderr.decode().splitlines()
        assert refused.returncode == 125 and len(lines) == 1, (args, lines)
        assert "breaker database" in lines[0] and "not a database" in lines[0]
    ran = stockade("run", "--breaker", "--timeout", "100ms", str(guest("spin.wasm")))
    assert ran.returncode == 124 and b"Traceback" not in ran.stderr
    assert b"circuit breaker unavailable, runs allowed" in ran.stderr, ran.stderr


def test_a_breaker_row_of_the_wrong_types_is_one_line(tmp_path: Path) -> None:
    """SQLite keeps text in a REAL column: `breaker list` ended in a TypeError traceback
    and `--json` printed the text as the time."""
    state = tmp_path / "state"
    with Breaker(state / "breaker.db", BreakerConfig(threshold=1)) as breakers:
        breakers.record(DIGEST, None, violated=True)
    with closing(sqlite3.connect(state / "breaker.db")) as db, db:
        db.execute("UPDATE breakers SET until='abc'")
    for args in (("breaker", "list"), ("breaker", "list", "--json")):
        refused = stockade(*args)
        lines = (refused.stderr or refused.stdout).decode().splitlines()
        assert refused.returncode == 125 and len(lines) == 1, (args, lines)
        assert "breaker database" in lines[0] and "until holds 'abc'" in lines[0]
        assert b'"until"' not in refused.stdout, (args, refused.stdout)
    with Breaker(state / "breaker.db") as breakers, pytest.raises(sqlite3.DatabaseError):
        breakers.check(DIGEST)


@pytest.mark.parametrize("line", [
    b'{"seq": Infinity, "hash": "0"}\n',
    b"[" * 100_000 + b"\n",
    b"x" * (3 << 20) + b"\n",
])
def test_verify_names_a_line_that_is_no_record(log: AuditLog, line: bytes) -> None:
    """`verify` exists to judge tampered logs: such lines ended it in a traceback, and a
    line of gigabytes was read whole (found by review)."""
    with log.path.open("ab") as file:
        file.write(line)
    report = verify(log.path)
    assert not report.ok and report.line == 6 and "not a valid audit record" in report.problem
    log.append("violation", "after", module="m.wasm")  # the damaged tail is chained to


def test_a_state_directory_others_can_write_gets_no_telemetry_file(tmp_path: Path) -> None:
    """The audit log was refused there, the telemetry file written (found by review)."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    ran = stockade("run", str(guest("hello.wasm")))
    assert ran.returncode == 0 and b"Traceback" not in ran.stderr, ran.stderr
    lost = [line for line in ran.stderr.decode().splitlines() if "records lost" in line]
    assert len(lost) == 1 and "the telemetry file" in lost[0] and "chmod 700" in lost[0], lost
    assert not (state / "telemetry.jsonl").exists()


@pytest.mark.parametrize("until", [1e12, 1e20, -1.0])
def test_a_breaker_time_no_date_can_show_is_one_line(tmp_path: Path, until: float) -> None:
    """Any finite float passed the row check: `breaker list` ended in a ValueError (year
    33658) or OverflowError traceback showing it (found by review). Times are bounded
    as the shared store's are (0 to 2**33 s)."""
    state = tmp_path / "state"
    with Breaker(state / "breaker.db", BreakerConfig(threshold=1)) as breakers:
        breakers.record(DIGEST, None, violated=True)
    with closing(sqlite3.connect(state / "breaker.db")) as db, db:
        db.execute("UPDATE breakers SET until=?", (until,))
    for args in (("breaker", "list"), ("breaker", "list", "--json")):
        refused = stockade(*args)
        lines = refused.stderr.decode().splitlines()
        assert refused.returncode == 125 and len(lines) == 1, (args, lines)
        assert "breaker database" in lines[0] and "until holds" in lines[0], lines
    with Breaker(state / "breaker.db") as breakers, pytest.raises(sqlite3.DatabaseError):
        breakers.check(DIGEST)  # a run says it and goes ahead (fails open)


@pytest.mark.parametrize("timestamp", [1e12, 1e20, -1e20, float("inf"), float("nan")])
def test_iso_time_shows_any_time(timestamp: float) -> None:
    from stockade.telemetry.decision import iso_time

    assert iso_time(timestamp)

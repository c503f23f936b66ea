"""The audit log: security events as JSON lines, chained by SHA-256.

Each record holds `seq`, the previous record's hash (`prev`) and its own `hash`, the
SHA-256 of its canonical JSON without `hash`. Appends take an exclusive `flock`, so
processes can share the file; a sidecar `<file>.head` keeps the last seq and hash so
that records cut off the end are noticed too. `verify` walks the chain and names the
first record that was changed, removed or moved.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ..paths import state_dir
from .log import logger

__all__ = ["AuditLog", "AuditReport", "verify", "record_hash", "GENESIS"]

GENESIS = "0" * 64
_TAIL = 8192


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of `record` without its `hash` key, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _last_line(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunk = b""
    offset = size
    while offset > 0:
        step = min(_TAIL, offset)
        offset -= step
        chunk = os.pread(fd, step, offset) + chunk
        lines = chunk.rstrip(b"\n").rsplit(b"\n", 1)
        if len(lines) == 2 or offset == 0:
            return lines[-1]
    return b""


class AuditLog:
    """Appends hash-chained records to `path` (default: `audit.jsonl` in the state
    directory). `emit(record)` is called after each append (the OTel log record)."""

    def __init__(self, path: Path | str | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(path) if path is not None else state_dir() / "audit.jsonl"
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._emit = emit

    def append(self, kind: str, message: str, **fields: Any) -> dict[str, Any]:
        """Append one event of `kind` (`violation`, `quota_hit`, `denial`,
        `breaker_transition`, `breaker_reset`, ...) and return the record written.
        Raises OSError when the file cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = 0, GENESIS
            last = _last_line(fd)
            if last:
                try:
                    previous = json.loads(last)
                    seq, prev = int(previous["seq"]), str(previous["hash"])
                except (ValueError, KeyError, TypeError):
                    # A damaged tail still gets chained to; `verify` reports the damage.
                    seq, prev = seq + 1, hashlib.sha256(last).hexdigest()
            now = time.time()
            record: dict[str, Any] = {
                "seq": seq + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1e6):06d}Z",
                "kind": kind,
                "message": message,
                **{k: v for k, v in fields.items() if v is not None},
                "prev": prev,
            }
            record["hash"] = record_hash(record)
            os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
            self._write_head(record)
        finally:
            os.close(fd)
        if self._emit is not None:
            try:
                self._emit(record)
            except Exception:  # noqa: BLE001 - telemetry never breaks a run
                logger("stockade.telemetry.audit").warning(
                    "could not emit audit record as telemetry", exc_info=True)
        return record

    def _write_head(self, record: dict[str, Any]) -> None:
        tmp = self.head_path.with_name(f"{self.head_path.name}.{os.getpid()}")
        head = json.dumps({"seq": record["seq"], "hash": record["hash"]}) + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, head.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)


class AuditReport(NamedTuple):
    """What `verify` found: `ok`, how many records were read, and the first bad one
    (`line` is 1-based, `seq` the sequence number found there) with `problem`."""

    ok: bool
    records: int
    line: int | None = None
    seq: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.records} records"
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"audit log broken at {where}: {self.problem}"


def verify(path: Path | str | None = None) -> AuditReport:
    """Check the hash chain of the audit log at `path` (default: the state directory's).
    A missing file is an intact, empty log. Raises OSError when it cannot be read."""
    path = Path(path) if path is not None else state_dir() / "audit.jsonl"
    if not path.exists():
        return AuditReport(True, 0)
    prev, expected, count = GENESIS, 1, 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                record = json.loads(raw)
                seq = int(record["seq"])
                stored = str(record["hash"])
            except (ValueError, KeyError, TypeError):
                return AuditReport(False, count, number, None, "not a valid audit record")
            if record_hash(record) != stored:
                return AuditReport(False, count, number, seq,
                                   "record was changed (its hash does not match its content)")
            if seq != expected:
                return AuditReport(False, count, number, seq, (
                    f"expected seq {expected}: records were removed or reordered"))
            if record.get("prev") != prev:
                return AuditReport(False, count, number, seq,
                                   "previous record was changed or removed (chain broken)")
            prev, expected, count = stored, expected + 1, count + 1
    head_path = path.with_name(path.name + ".head")
    if head_path.exists():
        try:
            head = json.loads(head_path.read_text())
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError):
            return AuditReport(False, count, None, None, f"{head_path.name} is damaged")
        if (head_seq, head_hash) != (expected - 1, prev):
            return AuditReport(False, count, count + 1, head_seq, (
                f"the log ends at seq {expected - 1} but its head records seq {head_seq}: "
                "records were removed from the end"))
    return AuditReport(True, count)

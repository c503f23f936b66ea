"""The audit log: security events as JSON lines, chained and keyed with HMAC-SHA256.

Each record holds `seq`, the previous record's hash (`prev`) and its own `hash`: the
HMAC-SHA256, under the audit key, of its canonical JSON without `hash`. The key lives
outside the state directory (`$STOCKADE_AUDIT_KEY`, else `audit.key` in the config
directory, see `stockade.keys`), so whoever can write the log cannot rewrite history and
recompute the chain. A sidecar `<file>.head` keeps the last seq and hash (keyed too),
so records cut off the end, or a deleted log, are noticed.

Appends take an exclusive `flock` on `<file>.lock`, so processes share one chain. An
append first compares the log's last record with the head: when they disagree (the
tail was cut, the log deleted, the head removed) it writes a `tamper` record naming
both before its own record, instead of quietly chaining onto what is left; `verify`
reports every log holding a `tamper` record as broken.

The log rotates by size: when `<file>` reaches `max_bytes` it is renamed
`<file>.1`, `<file>.2`, ... (oldest first) and the next record, in a new `<file>`,
chains onto the last record of the previous one. `verify` walks the rotated files in
order, then `<file>`. Rotated files are never removed here: archive them whole.

Freshness. The head lives beside the log, so whoever can write the state directory can
save it at N records and later cut the log back to N and put the saved head back (a
rollback), or erase the log and its head together. So each append also writes a
*counter*, the last seq and hash keyed like the head, beside the key (in the key's
directory, `audit-<digest of the log's path>.seq`, outside the state directory), and both
`append` and `verify` refuse a log that ends before the counter: a rollback, and a
deleted log whose counter remains, are reported. Limits: the counter protects against
whoever can write the state directory but not the key's directory; anyone who can write
the key's directory (this user, root) can roll back the counter too, and a log whose
key directory is lost loses its freshness (not its chain). Logs written before the
counter existed are checked from their first append after it.

Every file here is opened with O_NOFOLLOW|O_NONBLOCK and must be a regular file (a FIFO
planted as the log or its head must not hang a run while it holds the lock), and the
state directory is created 0700 and refused when another uid owns it or group/others can
write it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UsageError
from ..keys import KeyFileError, read_key
from ..paths import state_dir
from ..regularfile import append_lines, not_private, open_regular, private_dir, read_regular
from .envsettings import AUDIT_KEY_ENV, audit_key_path, audit_max_bytes
from .log import logger

__all__ = ["AuditLog", "AuditReport", "verify", "record_hash", "audit_key_path",
           "counter_path", "private_dir", "GENESIS"]

GENESIS = "0" * 64
KEY_ENV = AUDIT_KEY_ENV
_TAIL = 8192
# What a line that is no record raises as it is read (`"seq": Infinity`, deep nesting).
_UNREADABLE = (ValueError, KeyError, TypeError, OverflowError, RecursionError)
_TAIL_MAX = 1 << 20  # bytes of a last line read (a record is a few hundred)
_HEAD_SIZE = 256
_KEY_PURPOSE = "audit key"


def _secret_key(path: Path, create: bool) -> bytes | None:
    try:
        return read_key(path, create=create)
    except KeyFileError as exc:
        raise UsageError(f"{_KEY_PURPOSE}: {exc.reason}") from None


def _real(path: Path) -> str:
    """`path` with its links followed as far as they go. `Path.resolve` raises
    RuntimeError on a link loop, which whoever can write the state directory can plant
    as the log: a run lost its record unsaid and `verify` ended in a traceback."""
    return os.path.realpath(path)


def counter_path(log: Path, key_path: Path) -> Path:
    """The freshness counter of the log at `log`: beside the key, named after the log's
    absolute path as given, links not followed. Named after where the links led, a
    state directory replaced by a link to another directory had a counter of its own,
    none: the log was erased and `verify` said intact (found by review)."""
    digest = hashlib.sha256(os.path.abspath(log).encode()).hexdigest()[:16]
    return key_path.parent / f"audit-{digest}.seq"


def _cannot_hold(directory: Path) -> str:
    """Why `append` could keep no log in `directory`, or "": it must be a private
    directory, or one `private_dir` can make (its nearest existing parent a directory
    this user can write). Raises OSError."""
    found = directory
    while not os.path.lexists(found) and found != found.parent:
        found = found.parent
    if found == directory and found.is_dir():
        return not_private(directory)
    if not found.is_dir() or not os.access(found, os.W_OK | os.X_OK):
        return f"{directory} cannot be made ({found} is no directory this user can write)"
    return ""


def _canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _encoded(record: dict[str, Any]) -> bytes:
    """A record's line, exactly as `append` writes it and `verify` expects it."""
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def record_hash(record: dict[str, Any], key: bytes | None = None) -> str:
    """The hash (hex) of `record` without its `hash` key, as canonical JSON: HMAC-SHA256
    under `key`, or plain SHA-256 without one (which `verify` never accepts)."""
    if key is None:
        return hashlib.sha256(_canonical(record)).hexdigest()
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, last: str) -> str:
    return hmac.new(key, f"stockade-audit-head:{seq}:{last}".encode(), hashlib.sha256).hexdigest()


def _segments(path: Path) -> list[Path]:
    """Rotated files of `path`, oldest first (`<name>.1`, `<name>.2`, ...)."""
    pattern = re.compile(re.escape(path.name) + r"\.([0-9]+)")
    numbered = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            numbered.append((int(match.group(1)), path.with_name(name)))
    return [p for _, p in sorted(numbered)]


def _last_line(fd: int) -> bytes:
    """The file's last non-empty line, read backwards a block at a time: a long last line
    costs its length (it cost its square, seconds for a few MiB under the lock). Past
    `_TAIL_MAX` without a newline, its last `_TAIL_MAX` bytes: no record is that long."""
    offset = os.fstat(fd).st_size
    blocks: list[bytes] = []
    kept = 0
    while offset > 0 and kept < _TAIL_MAX:
        step = min(_TAIL, offset)
        offset -= step
        block = os.pread(fd, step, offset)
        if not blocks:
            block = block.rstrip(b"\n")  # the newlines after the last line
            if not block:
                continue
        cut = block.rfind(b"\n")
        blocks.append(block[cut + 1:])
        kept += len(blocks[-1])
        if cut >= 0:
            break
    return b"".join(reversed(blocks))[-_TAIL_MAX:]


def _file_tail(path: Path) -> bytes:
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return _last_line(fd)
    finally:
        os.close(fd)


class _Link(NamedTuple):
    """A point in the chain: the last record's seq and hash (`prev` of a damaged one)."""

    seq: int
    hash: str
    prev: str | None = None


def _parse_link(raw: bytes) -> _Link | None:
    try:
        record = json.loads(raw)
        return _Link(int(record["seq"]), str(record["hash"]), str(record.get("prev")))
    except _UNREADABLE:
        return None


class AuditLog:
    """Appends keyed, hash-chained records to `path` (default: `audit.jsonl` in the state
    directory). `emit(record)` is called after each append (the OTel log record). `key`
    (bytes) overrides the key file at `key_path` (default `audit_key_path()`), which is
    created on the first append; `max_bytes` is the size at which the file rotates
    (default `$STOCKADE_AUDIT_MAX_BYTES`, else 16 MiB)."""

    def __init__(self, path: Path | str | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None, *,
                 key: bytes | None = None, key_path: Path | str | None = None,
                 max_bytes: int | None = None) -> None:
        self.path = Path(path) if path is not None else state_dir() / "audit.jsonl"
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.key_path = Path(key_path) if key_path is not None else audit_key_path()
        self.counter_path = counter_path(self.path, self.key_path)
        self.max_bytes = max_bytes if max_bytes is not None else audit_max_bytes()
        self._key = key
        self._emit = emit

    @property
    def key(self) -> bytes:
        """The audit key, read (or created) on first use. Raises UsageError for a key file
        others can read or change, or that lies inside the log's own directory."""
        if self._key is None:
            if Path(_real(self.key_path)).parent == Path(_real(self.path)).parent:
                raise UsageError(f"audit key {self.key_path}: it lies beside the audit log; "
                                 f"keep it outside the state directory ({KEY_ENV})")
            key = _secret_key(self.key_path, create=True)
            if key is None:  # read_key creates it; this only narrows the type
                raise UsageError(f"audit key {self.key_path}: could not be created")
            self._key = key
        return self._key

    def append(self, kind: str, message: str, **fields: Any) -> dict[str, Any]:
        """Append one event of `kind` (`violation`, `quota_hit`, `denial`,
        `breaker_transition`, `breaker_reset`, ...) and return the record written. When the
        log's tail does not match its head, a `tamper` record is written first. Raises
        OSError when the file cannot be written, UsageError for an unusable key."""
        key = self.key
        private_dir(self.path.parent)
        lock = open_regular(self.lock_path, os.O_RDWR | os.O_CREAT)
        written: list[dict[str, Any]] = []
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tail_raw = self._tail()
            tail = _parse_link(tail_raw) if tail_raw else None
            head, head_problem = self._head(key)
            counter, counter_problem = _read_link(self.counter_path, key)
            if tail_raw and tail is None:
                # A damaged last line still gets chained to; `verify` names it.
                tail = _Link(head.seq if head else 0, hashlib.sha256(tail_raw).hexdigest())
            seq, prev = (tail.seq, tail.hash) if tail else (0, GENESIS)
            problem = (head_problem or _mismatch(head, tail) or counter_problem
                       or _rolled_back(counter, tail.seq if tail else 0))
            if problem:
                tamper = self._record(key, seq + 1, prev, "tamper", problem, {
                    "expected_seq": head.seq if head else None,
                    "expected_hash": head.hash if head else None,
                    "found_seq": tail.seq if tail else None,
                    "found_hash": tail.hash if tail else None,
                })
                written.append(tamper)
                seq, prev = tamper["seq"], tamper["hash"]
            record = self._record(key, seq + 1, prev, kind, message, fields)
            written.append(record)
            lines = [_encoded(r) for r in written]
            self._rotate_if_full()
            fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                # All or nothing, before the head moves: half a record (a full disk) read
                # as tampering at the next append, and broke the chain for good.
                append_lines(fd, b"".join(lines))
            finally:
                os.close(fd)
            self._write_head(key, record)
            # Last: a crash before it leaves the counter behind the log, never ahead.
            _write_link(self.counter_path, key, record)
        finally:
            os.close(lock)
        for each in written:
            self._emit_record(each)
        return record

    @staticmethod
    def _record(key: bytes, seq: int, prev: str, kind: str, message: str,
                fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        record: dict[str, Any] = {
            "seq": seq,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1e6):06d}Z",
            "kind": kind,
            "message": message,
            **{k: v for k, v in fields.items()
               if v is not None and k not in ("seq", "prev", "hash")},
            "prev": prev,
        }
        record["hash"] = record_hash(record, key)
        return record

    def _tail(self) -> bytes:
        """The last line of the whole log: `<file>`, else the newest rotated file."""
        last = _file_tail(self.path)
        if last:
            return last
        segments = _segments(self.path)
        return _file_tail(segments[-1]) if segments else b""

    def _head(self, key: bytes) -> tuple[_Link | None, str]:
        return _read_head(self.head_path, key)

    def _rotate_if_full(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size < self.max_bytes:
            return
        segments = _segments(self.path)
        number = 1 + (int(segments[-1].name.rsplit(".", 1)[1]) if segments else 0)
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{number}"))

    def _write_head(self, key: bytes, record: dict[str, Any]) -> None:
        _write_link(self.head_path, key, record)

    def _emit_record(self, record: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            self._emit(record)
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger("stockade.telemetry.audit").warning(
                "could not emit audit record as telemetry", exc_info=True)


def _write_link(path: Path, key: bytes, record: dict[str, Any]) -> None:
    """Write a head or counter: the record's seq and hash, keyed. Rewritten in place at a
    fixed size, under the lock: a rename per record cost milliseconds. One torn by a
    crash reads as damaged: loud, never silent."""
    seq, last = int(record["seq"]), str(record["hash"])
    head = json.dumps({"seq": seq, "hash": last, "mac": _head_mac(key, seq, last)})
    data = head.encode().ljust(_HEAD_SIZE - 1) + b"\n"
    fd = open_regular(path, os.O_RDWR | os.O_CREAT)
    try:
        if os.pwrite(fd, data, 0) != len(data):  # a new file on a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if os.fstat(fd).st_size != _HEAD_SIZE:
            os.ftruncate(fd, _HEAD_SIZE)
    finally:
        os.close(fd)


def _rolled_back(counter: _Link | None, last_seq: int) -> str:
    """Why a log ending at `last_seq` is older than its counter, or ""."""
    if counter is None or last_seq >= counter.seq:
        return ""
    if last_seq == 0:
        return (f"the log and its head are gone but its counter records seq {counter.seq}: "
                "the log was erased")
    return (f"the log ends at seq {last_seq} but its counter (beside the key) records seq "
            f"{counter.seq}: the log was rolled back to an older copy")


def _read_head(head_path: Path, key: bytes) -> tuple[_Link | None, str]:
    """The head as a link, or a problem when it exists but is damaged or not keyed."""
    return _read_link(head_path, key)


def _read_link(head_path: Path, key: bytes) -> tuple[_Link | None, str]:
    """A head or counter as a link, or a problem when it exists but is damaged, not
    keyed, or not a regular file."""
    try:
        text = read_regular(head_path, _HEAD_SIZE * 2)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"{head_path.name}: {exc.strerror}"
    try:
        head = json.loads(text)
        seq, last, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
    except _UNREADABLE:
        return None, f"{head_path.name} is damaged"
    if not hmac.compare_digest(mac, _head_mac(key, seq, last)):
        return None, f"{head_path.name} was not written with the audit key (forged or replaced)"
    return _Link(seq, last), ""


def _mismatch(head: _Link | None, tail: _Link | None) -> str:
    """Why the log's tail does not continue its head, or "" when it does. A tail one
    record past the head, chained onto it, is a crash between the two writes."""
    if head is None and tail is None:
        return ""
    if head is None:
        return f"the log ends at seq {tail.seq if tail else 0} but its head is missing"
    if tail is None:
        return (f"the log is missing or empty but its head records seq {head.seq}: "
                "records were deleted")
    if (tail.seq, tail.hash) == (head.seq, head.hash) or (
            tail.seq == head.seq + 1 and tail.prev == head.hash):
        return ""
    if tail.seq < head.seq:
        return (f"the log ends at seq {tail.seq} but its head records seq {head.seq}: "
                "records were removed from the end")
    return (f"the log ends at seq {tail.seq} ({tail.hash[:12]}) but its head records "
            f"seq {head.seq} ({head.hash[:12]}): the log was replaced or rewritten")


class AuditReport(NamedTuple):
    """What `verify` found: `ok`, how many records were read, and the first bad one
    (`line` is 1-based within `file`, `seq` the sequence number found there) with
    `problem`. `file` is None for the main log file."""

    ok: bool
    records: int
    line: int | None = None
    seq: int | None = None
    problem: str = ""
    file: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.records} records"
        if self.line is None:  # the head, or a file that is no log file (`file`)
            where = self.file or "its head"
        else:
            where = (f"{self.file} " if self.file else "") + f"line {self.line}"
        where += f" (seq {self.seq})" if self.seq is not None else ""
        return f"audit log broken at {where}: {self.problem}"


def _not_a_log_file(path: Path) -> str:
    """Why `path` is no log file (a symlink, a FIFO, a device planted where the log or a
    rotated file should be), or "". Reading it is refused either way (`open_regular`):
    said as a log replaced, not as a log that cannot be read."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "it is a symbolic link, not the log: the log was replaced"
    if not stat.S_ISREG(mode):
        return "it is not a regular file: the log was replaced"
    return ""


def _lines(paths: list[Path]) -> Iterator[tuple[Path, int, bytes]]:
    for path in paths:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as file:
            number = 0
            while raw := file.readline(_TAIL_MAX):  # a longer line is no record
                number += 1
                yield path, number, raw


def verify(path: Path | str | None = None, *, key: bytes | None = None,
           key_path: Path | str | None = None) -> AuditReport:
    """Check the keyed hash chain of the audit log at `path` (default: the state
    directory's), its rotated files first, and its head. No log and no head is an
    intact, empty log; a head without a log is not, nor is a symlink or anything but a
    regular file in the log's place. A `tamper` record makes the log broken. Raises
    OSError when it cannot be read, UsageError for an unusable key or for a place that
    can hold no log (no log there, nor ever one: every run's record is lost)."""
    default = path is None
    path = Path(path) if path is not None else state_dir() / "audit.jsonl"
    # lexists: a link planted as a file is a log replaced, not a log absent.
    files = [*_segments(path), *([path] if os.path.lexists(path) else [])]
    head_path = path.with_name(path.name + ".head")
    where = Path(key_path) if key_path is not None else audit_key_path()
    counter_file = counter_path(path, where)
    if not files and not os.path.lexists(head_path) and not os.path.lexists(counter_file):
        # Nothing audited yet, unless nothing can be: then every run loses its records
        # (where runs keep it: a path named is simply no log, `/tmp/x.jsonl` included).
        problem = _cannot_hold(path.parent) if default else None
        if problem:
            raise UsageError(f"{path}: no audit log can be kept there: {problem}")
        return AuditReport(True, 0)
    for file in files:
        odd = _not_a_log_file(file)
        if odd:
            return AuditReport(False, 0, None, None, odd, file.name)
    if key is None:
        key = _secret_key(where, create=False)
        if key is None:
            return AuditReport(False, 0, None, None, (
                f"the audit key {where} is missing: the records cannot be authenticated"))
    head, counter, problem = _read_head_locked(path, key, counter_file)
    if problem:
        return AuditReport(False, 0, None, None, problem)
    prev, expected, count = GENESIS, 1, 0
    for file, number, raw in _lines(files):
        name = None if file == path else file.name

        def broken(problem: str, seq: int | None = None, name: str | None = name,
                   number: int = number, count: int = count) -> AuditReport:
            return AuditReport(False, count, number, seq, problem, name)

        try:
            record = json.loads(raw)
            seq = int(record["seq"])
            stored = str(record["hash"])
        except _UNREADABLE:
            return broken("not a valid audit record")
        if not hmac.compare_digest(record_hash(record, key), stored):
            return broken("record was changed or not written with the audit key "
                          "(its keyed hash does not match its content)", seq)
        if _encoded(record) != raw:
            # The hash covers the parsed record: a key written twice showed a reader
            # taking the first one text the hash never covered.
            return broken("the record is not as it was written (a key repeated, or "
                          "reformatted)", seq)
        if seq != expected:
            return broken(f"expected seq {expected}: records were removed or reordered", seq)
        if record.get("prev") != prev:
            return broken("previous record was changed or removed (chain broken)", seq)
        if record.get("kind") == "tamper":
            return broken(f"tampering was found when this record was written: "
                          f"{record.get('message')}", seq)
        if head is not None and seq == head.seq and stored != head.hash:
            return broken("this is not the record the head names: the log was replaced "
                          "or rewritten", seq)
        if counter is not None and seq == counter.seq and stored != counter.hash:
            return broken("this is not the record the counter (beside the key) names: the "
                          "log was replaced or rewritten", seq)
        prev, expected, count = stored, expected + 1, count + 1
    # Records past the head are appends made while this ran (or before a crash).
    if head is None and count:
        return AuditReport(False, count, None, None,
                           f"the log ends at seq {count} but its head is missing")
    if head is not None and count < head.seq:
        return AuditReport(False, count, None, head.seq, (
            f"the log ends at seq {count} but its head records seq {head.seq}: "
            + ("the log was deleted" if not count else "records were removed from the end")))
    rolled = _rolled_back(counter, count)
    if rolled:
        return AuditReport(False, count, None, counter.seq if counter else None, rolled)
    return AuditReport(True, count)


def _read_head_locked(path: Path, key: bytes,
                      counter_file: Path) -> tuple[_Link | None, _Link | None, str]:
    """The head and the counter, read under a shared lock so that no append is half
    done, or a problem with either."""
    head_path = path.with_name(path.name + ".head")
    try:
        lock = open_regular(path.with_name(path.name + ".lock"), os.O_RDONLY)
    except FileNotFoundError:
        lock = -1
    try:
        if lock >= 0:
            fcntl.flock(lock, fcntl.LOCK_SH)
        head, problem = _read_link(head_path, key)
        counter, counter_problem = _read_link(counter_file, key)
        return head, counter, problem or (counter_problem and f"counter {counter_problem}")
    finally:
        if lock >= 0:
            os.close(lock)

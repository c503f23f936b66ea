"""Circuit breakers per key (and tenant), shared by processes through SQLite.

    closed --N counted violations within the window--> open --cooldown over--> half_open
    half_open --probe ran clean--> closed;  half_open --probe violated or failed--> open
    half_open --probe violated, its client already counted--> half_open, probe free
    half_open --probe granted but never ran (refused, cancelled)--> half_open, probe free
    half_open --any other run ended, clean or not--> half_open (a violation is counted)

A key names what misbehaved: the gateway uses `function:<name>` (per tenant), so
changing a module's bytes does not escape its function's breaker; a module digest
is the key when nothing else is named. What counts is a resource-limit violation
(timeout, fuel, memory, output, disk, files, descriptors, host calls); traps count
only with `count_traps` (a client that can make a function trap must not be able to
take it offline), and refusals never count. For the same reason a gateway's runs name
their client (`source`): one client's violations count once per window, so `threshold`
clients must hit limits to open a function's breaker; the gateway refuses a client
whose own runs keep hitting them (`gateway.clientbreaker`). A half-open probe that
violates re-opens the breaker only when its client is not one still remembered (the
window and a cooldown, `BreakerConfig.remembered`): otherwise one of the clients that
opened it could keep it open for everyone by taking each probe; such a client is
refused while the breaker is half-open (`counted`, asked by the gateway when it is
granted a probe), and a probe it ran all the same is freed for the next request.

`check` is what runs before a run: one indexed SELECT in the common case, no
wasmtime. `record` runs after it. Every decision that changes state, and every count,
is one `BEGIN IMMEDIATE` transaction, so processes sharing `breaker.db` count
exactly, open a breaker once, and let exactly one probe through when it half-opens.
A breaker does not bound runs already admitted while it was closed: that is what the
concurrency quotas are for. Refusals are counted in memory and added to the database
at most once a second; the count is reported with the transition that ends the open
period (one audit record per transition, not one per refusal). Every transition is
passed to `on_transition` (the audit log).

While half-open, only the probe's own run moves the breaker. Runs admitted while it
was closed (a breaker does not stop them, and a gateway trusts a closed breaker for a
moment) still end while the probe is out: a clean one proves nothing about the run
that failed, and one ending in a violation must not throw the probe away. A probe is
held by a run, named by its `holder` (the invocation id); `record` closes or re-opens a
half-open breaker only for that holder's run, and only while the stored probe is still
the one granted to it (its `probe_at`).

A probe granted at admission that never ran (the queue refused it, its client went
away) proves nothing: `probe_unused` frees it, so the next request may probe, instead
of counting it as a failure (a client who fills the queue whenever the breaker
half-opens would otherwise hold it open). It frees only the probe this process was
granted (matched by when it was granted), never a later one, so no more than one
probe is ever in flight.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from ..paths import state_dir
from ..result import Outcome, Result
from .decision import LATEST, Decision, iso_time
from .envsettings import BreakerConfig

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "Breaker",
    "BreakerStore",
    "BreakerStoreFactory",
    "BreakerConfig",
    "BreakerEntry",
    "Decision",
    "ProbeGrants",
    "Transition",
    "refusal_result",
    "iso_time",
    "default_path",
    "unusable",
]

_VERSION = 3
_SCHEMA = (
    # Version 1 keyed breakers by module digest; its state is dropped, not migrated.
    "DROP TABLE IF EXISTS breakers",
    "DROP TABLE IF EXISTS violations",
    "CREATE TABLE breakers (key TEXT NOT NULL, tenant TEXT NOT NULL,"
    " state TEXT NOT NULL, opened_at REAL, until REAL, probe_at REAL,"
    " count INTEGER NOT NULL DEFAULT 0, trips INTEGER NOT NULL DEFAULT 0,"
    " denied INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL, PRIMARY KEY (key, tenant))",
    "CREATE TABLE violations (key TEXT NOT NULL, tenant TEXT NOT NULL, at REAL, source TEXT)",
    "CREATE INDEX violations_key ON violations (key, tenant, at)",
    f"PRAGMA user_version = {_VERSION}",
)
# Version 2 counted every violation; version 3 a client's once (`source`): kept.
_FROM_2 = ("ALTER TABLE violations ADD COLUMN source TEXT", f"PRAGMA user_version = {_VERSION}")
DENIAL_FLUSH = 1.0  # seconds between writes of a process's refusal count
# What each column read back must hold: SQLite keeps any value in any column.
# Times are seconds since the epoch up to `LATEST` (the year 2242), as the shared store's:
# any finite float passed, and 1e12 (the year 33658) ended `breaker list` in a traceback
# where it was shown.
_KINDS = {"key": "text", "tenant": "text", "state": "text", "opened_at": "time?",
          "until": "time?", "probe_at": "time?", "updated": "time", "count": "count",
          "trips": "count", "denied": "count"}


def _checked(row: Sequence[Any], columns: str) -> tuple[Any, ...]:
    """`row` as read from the `columns` (names, space-separated) of `breakers`. Raises
    sqlite3.DatabaseError for a value of another type, as for a damaged file: a row
    edited by hand would otherwise end a listing or a check in a TypeError."""
    import sqlite3

    for name, value in zip(columns.split(), row, strict=True):
        kind = wanted = _KINDS[name]
        if kind == "text":
            ok = type(value) is str
        elif kind == "count":
            ok = type(value) is int and value >= 0
        else:
            ok = (value is None and kind == "time?") or (
                type(value) in (int, float) and 0 <= value <= LATEST)  # NaN fails too
            wanted = "time from 0 to 2**33 s since the epoch"
        if not ok:
            raise sqlite3.DatabaseError(f"breakers table: {name} holds {value!r:.40} "
                                        f"({type(value).__name__}), not a {wanted}")
    return tuple(row)


def default_path() -> Path:
    """Where breakers are kept: `breaker.db` in the state directory."""
    return state_dir() / "breaker.db"


def unusable(path: Path | str | None = None) -> str:
    """Why the breaker database at `path` (default: `default_path()`) cannot be used, on
    which breakers fail open (every run allowed), or "": also when there is none yet,
    or one of an older schema (the first use makes or upgrades it). Read only: opened
    read-only, each row checked as `entries` checks it."""
    import sqlite3

    path = Path(path) if path is not None else default_path()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the open
            return "not a regular file"
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return exc.strerror or str(exc)
    columns = "key tenant state opened_at until probe_at count trips denied updated"
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < _VERSION:
                return ""
            for row in db.execute(f"SELECT {', '.join(columns.split())} FROM breakers"):
                _checked(row, columns)
        finally:
            db.close()
    except sqlite3.Error as exc:
        return str(exc)
    return ""


class Transition(NamedTuple):
    """A breaker changed state (`closed`, `open`, `half_open`); `denied` is how many runs
    it refused while open (reported when the open period ends)."""

    key: str
    tenant: str | None
    old: str
    new: str
    at: float
    violations: int
    until: float | None
    reason: str
    denied: int = 0


class BreakerEntry(NamedTuple):
    """One breaker as stored; `violations` counts those within the current window,
    `denied` the refusals of its current open period written so far."""

    key: str
    tenant: str | None
    state: str
    violations: int
    opened_at: float | None
    until: float | None
    trips: int
    updated: float
    denied: int = 0


_At = TypeVar("_At")


class ProbeGrants(Generic[_At]):
    """The half-open probes this process was let through, by (key, tenant): the token the
    store stored for each (its `probe_at`) and the run holding it (`holder`; None until
    the gateway names it). Only that run's end may move a half-open breaker. The caller
    holds its store's lock around every call."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[_At, str | None]] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def grant(self, ident: tuple[str, str], at: _At, holder: str | None = None) -> None:
        """A probe granted now, stored as `at`."""
        self._held[ident] = (at, holder)

    def bind(self, ident: tuple[str, str], holder: str | None) -> None:
        """The probe under `ident`, if any, is held by `holder`'s run."""
        granted = self._held.get(ident)
        if granted is not None:
            self._held[ident] = (granted[0], holder)

    def held_by(self, ident: tuple[str, str], holder: str | None) -> _At | None:
        """The probe's token when `holder`'s run holds the one under `ident`, else None."""
        granted = self._held.get(ident)
        return granted[0] if granted is not None and granted[1] == holder else None

    def take(self, ident: tuple[str, str], holder: str | None) -> _At | None:
        """`held_by`, and the probe is forgotten when it was `holder`'s."""
        at = self.held_by(ident, holder)
        if at is not None:
            del self._held[ident]
        return at

    def forget(self, ident: tuple[str, str]) -> None:
        """No probe under `ident` any more (its breaker was reset)."""
        self._held.pop(ident, None)


class BreakerStore(Protocol):
    """What telemetry asks of circuit breakers: `Breaker` (SQLite, one host) or a shared
    store (`stockade.state`, Redis). Same states, same counting, same transitions."""

    config: BreakerConfig

    @property
    def holds_probe(self) -> bool:
        """Whether this process holds a half-open breaker's probe: until it does, a
        clean run moves no breaker (`record` of one is a no-op), and is not told."""

    def check(self, key: str, tenant: str | None = None,
              now: float | None = None, holder: str | None = None) -> Decision:
        """May a run under `key` go ahead now, for this tenant? A refusal is counted; a
        probe granted is held by `holder`'s run."""

    def record(self, key: str, tenant: str | None, violated: bool,
               now: float | None = None, holder: str | None = None,
               source: str | None = None) -> Transition | None:
        """Report how `holder`'s run under `key` ended; returns the transition it caused
        (a half-open breaker moves only for its probe's holder). The violations of one
        `source` (a gateway's client) count as one within the window."""

    def counted(self, key: str, tenant: str | None, source: str) -> bool:
        """Whether a violation of `source` (a gateway's client) under `key` is counted
        within the window: such a client's probe would prove nothing."""

    def probe_held(self, key: str, tenant: str | None, holder: str | None) -> None:
        """The probe this process was granted under `key` (by an admission that named no
        run) is held by `holder`'s run."""

    def probe_unused(self, key: str, tenant: str | None, holder: str | None = None) -> None:
        """The probe `holder`'s run held under `key` never ran: free it for another
        request."""

    def probe_failed(self, key: str, tenant: str | None, now: float | None = None,
                     holder: str | None = None) -> Transition | None:
        """`holder`'s run ended without a Result: when it held this process's probe, the
        probe failed."""

    def entries(self, now: float | None = None) -> list[BreakerEntry]:
        """Every stored breaker, most recently changed first."""

    def reset(self, key: str = "", tenant: str | None = None) -> list[BreakerEntry]:
        """Close and forget breakers (see `Breaker.reset`); returns those removed."""

    def close(self) -> None:
        """Write what is pending and release the store. Safe twice."""


BreakerStoreFactory = Callable[[BreakerConfig, "Callable[[Transition], None] | None"],
                               "BreakerStore | None"]


def refusal_result(decision: Decision, module: str, sha256: str) -> Result:
    """The `denied` Result of a run the breaker refused (exit code 126)."""
    return Result(module=module, sha256=sha256, outcome=Outcome.DENIED,
                  exit_code=Outcome.DENIED.exit_code, message=decision.message)


def _label(key: str) -> str:
    """A key as people read it: a function name, or the first 12 digits of a digest."""
    return key.replace(":", " ", 1) if ":" in key else f"module {key[:12]}"


class Breaker:
    """Circuit breakers stored at `path` (default: `breaker.db` in the state directory).
    Thread-safe; usable with `with`; `close()` twice is safe."""

    def __init__(
        self,
        path: Path | str | None = None,
        config: BreakerConfig | None = None,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        import sqlite3  # here, not at the top: a run that never needs breakers skips it

        self.path = Path(path) if path is not None else default_path()
        self.config = config or BreakerConfig.from_env()
        self._on_transition = on_transition
        self._lock = threading.Lock()
        # Probes this process was let through: when each was granted (its token, the
        # stored `probe_at`) and the run holding it. Only that run's end can close a
        # breaker, so other clean runs never touch the database.
        self._probes: ProbeGrants[float] = ProbeGrants()
        # Refusals not yet added to the database, and when each key last was.
        self._denied: dict[tuple[str, str], int] = {}
        self._flushed: dict[tuple[str, str], float] = {}
        self._closed = False
        # Private, as the audit log's (whoever can write it can replace the database).
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db: sqlite3.Connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
            # WAL lets readers (every `check`) proceed while another process writes.
            _switch_to_wal(self._db)
            with self._tx():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                # A newer version's schema is left alone (every statement here names
                # its columns): a rolling upgrade must not wipe the newer one's state.
                if version < _VERSION:
                    for statement in _FROM_2 if version == 2 else _SCHEMA:
                        self._db.execute(statement)
        self._db.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _tx(self) -> Iterator[None]:
        # IMMEDIATE: the write lock is taken before the first read, so a decision and the
        # write it leads to see one state across processes.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _row(self, key: str, tenant: str) -> tuple[str, float | None, float | None, int] | None:
        row = self._db.execute(
            "SELECT state, until, probe_at, count FROM breakers WHERE key=? AND tenant=?",
            (key, tenant)).fetchone()
        return None if row is None else _checked(row, "state until probe_at count")

    def check(self, key: str, tenant: str | None = None, now: float | None = None,
              holder: str | None = None) -> Decision:
        """May a run under `key` (a function, or a module digest) go ahead now, for this
        tenant? A refusal is counted (see `Transition.denied`). A probe granted is held
        by `holder`'s run (its invocation id; None for a caller that names no runs)."""
        now = time.time() if now is None else now
        ident = (key, tenant or "")
        transition = None
        with self._lock:
            row = self._row(*ident)
            if row is None or row[0] == "closed":
                return Decision(True, "closed")
            if row[0] == "open" and row[1] is not None and now < row[1]:
                self._deny(ident, now)
                return Decision(False, "open", self._refusal(key, row[1], row[3]), row[1])
            with self._tx():
                row = self._row(*ident)
                if row is None or row[0] == "closed":
                    return Decision(True, "closed")
                state, until, probe_at, count = row
                if state == "open" and until is not None and now < until:
                    self._deny(ident, now)
                    return Decision(False, "open", self._refusal(key, until, count), until)
                if state == "half_open" and probe_at is not None and (
                        now - probe_at < self.config.probe_timeout):
                    self._deny(ident, now)
                    return Decision(False, "half_open", (
                        f"{_label(key)} is refused: its circuit breaker lets one probe "
                        f"run through and that run is still going (since {iso_time(probe_at)})"))
                denied = self._take_denied(ident) if state == "open" else 0
                self._db.execute(
                    "UPDATE breakers SET state='half_open', probe_at=?, updated=? "
                    "WHERE key=? AND tenant=?", (now, now, *ident))
                if state == "open":
                    transition = Transition(key, tenant, "open", "half_open", now, count,
                                            None, "cooldown over: one probe run let through",
                                            denied)
                self._probes.grant(ident, now, holder)
        self._notify(transition)
        return Decision(True, "half_open", "probe run after cooldown", probe=True)

    def _deny(self, ident: tuple[str, str], now: float) -> None:
        """Count a refusal; add the counts to the database at most once a second."""
        self._denied[ident] = self._denied.get(ident, 0) + 1
        if now - self._flushed.get(ident, 0.0) >= DENIAL_FLUSH:
            self._flush(ident, now)

    def _flush(self, ident: tuple[str, str], now: float) -> None:
        pending = self._denied.pop(ident, 0)
        self._flushed[ident] = now
        if pending:
            self._db.execute("UPDATE breakers SET denied=denied+? WHERE key=? AND tenant=?",
                             (pending, *ident))

    def _take_denied(self, ident: tuple[str, str]) -> int:
        """Inside a transaction: the refusals counted so far (every process's written
        counts plus this one's pending), zeroed: the transition reports them."""
        row = self._db.execute("SELECT denied FROM breakers WHERE key=? AND tenant=?",
                               ident).fetchone()
        self._db.execute("UPDATE breakers SET denied=0 WHERE key=? AND tenant=?", ident)
        return (_checked(row, "denied")[0] if row else 0) + self._denied.pop(ident, 0)

    def _refusal(self, key: str, until: float, count: int) -> str:
        reset = key[:12] if ":" not in key else key
        return (f"{_label(key)} is refused until {iso_time(until)}: its circuit breaker "
                f"opened after {count} violations within {self.config.window:g} s "
                f"(`stockade breaker reset {reset}` closes it)")

    @property
    def holds_probe(self) -> bool:
        return bool(self._probes)

    def record(self, key: str, tenant: str | None, violated: bool,
               now: float | None = None, holder: str | None = None,
               source: str | None = None) -> Transition | None:
        """Report how `holder`'s run under `key` ended (`violated`: it counts, see
        `BreakerConfig.counts`); returns the transition it caused, if any. A half-open
        breaker is closed or re-opened only by the run holding its probe; another run's
        violation is counted, nothing more. Violations of one `source` (a gateway's
        client) count once per window: one client's inputs open no breaker alone."""
        if not violated and not self._probes:
            return None  # only a probe run of this process can close a breaker
        now = time.time() if now is None else now
        ident = (key, tenant or "")
        transition: Transition | None
        with self._lock:
            probe_at = self._probes.take(ident, holder)
            if not violated:
                if probe_at is None:
                    return None
                with self._tx():
                    row = self._row(*ident)
                    if row is None or row[0] != "half_open" or row[2] != probe_at:
                        return None
                    denied = self._take_denied(ident)
                    self._db.execute("DELETE FROM violations WHERE key=? AND tenant=?", ident)
                    self._db.execute(
                        "UPDATE breakers SET state='closed', probe_at=NULL, until=NULL, count=0,"
                        " updated=? WHERE key=? AND tenant=?", (now, *ident))
                transition = Transition(key, tenant, "half_open", "closed", now, 0, None,
                                        "probe run ended without a violation", denied)
            else:
                transition = self._violation(key, tenant, ident, now, probe_at, source)
        self._notify(transition)
        return transition

    def probe_failed(self, key: str, tenant: str | None, now: float | None = None,
                     holder: str | None = None) -> Transition | None:
        """`holder`'s run under `key` ended without a Result (it raised) or with an
        internal error: when it held this process's probe, the probe failed and the
        breaker opens again (instead of staying half-open until `probe_timeout`).
        Otherwise nothing."""
        if self._probes.held_by((key, tenant or ""), holder) is None:
            return None
        return self.record(key, tenant, True, now, holder)

    def counted(self, key: str, tenant: str | None, source: str,
                now: float | None = None) -> bool:
        """Whether `source`'s violation under `key` is remembered (`BreakerConfig.
        remembered`)."""
        now = time.time() if now is None else now
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM violations WHERE key=? AND tenant=? AND source=? AND at>=?",
                (key, tenant or "", source, now - self.config.remembered)
            ).fetchone() is not None

    def probe_held(self, key: str, tenant: str | None, holder: str | None) -> None:
        """The probe this process holds under `key` is held by `holder`'s run."""
        ident = (key, tenant or "")
        with self._lock:
            self._probes.bind(ident, holder)

    def probe_unused(self, key: str, tenant: str | None, holder: str | None = None) -> None:
        """The probe `holder`'s run held under `key` was granted but never ran (refused
        before it started, or cancelled): the breaker stays half-open with its probe
        free, so the next request may probe. A probe granted to another request since
        (after `probe_timeout`) is left alone. Nothing when `holder` holds no probe."""
        ident = (key, tenant or "")
        with self._lock:
            probe_at = self._probes.take(ident, holder)
            if probe_at is None:
                return
            with self._tx():
                self._db.execute(
                    "UPDATE breakers SET probe_at=NULL WHERE key=? AND tenant=? AND "
                    "state='half_open' AND probe_at=?", (*ident, probe_at))

    def _violation(self, key: str, tenant: str | None, ident: tuple[str, str],
                   now: float, probe_at: float | None,
                   source: str | None) -> Transition | None:
        """Count a violation (a `source`'s replaces its last one); open the breaker when
        closed and at the threshold, or when half-open and this is the run holding its
        probe (granted at `probe_at`) for a source not still remembered
        (one that is frees the probe instead)."""
        cfg = self.config
        with self._tx():
            # Kept a cooldown past the window: a client is remembered that long.
            self._db.execute("DELETE FROM violations WHERE key=? AND tenant=? AND at<?",
                             (*ident, now - cfg.remembered))
            # A source already remembered tells nothing new.
            known = source is not None and self._db.execute(
                "DELETE FROM violations WHERE key=? AND tenant=? AND source=?",
                (*ident, source)).rowcount > 0
            self._db.execute("INSERT INTO violations (key, tenant, at, source) "
                             "VALUES (?, ?, ?, ?)",
                             (*ident, now, source))
            count = self._db.execute(
                "SELECT COUNT(*) FROM violations WHERE key=? AND tenant=? AND at>=?",
                (*ident, now - cfg.window)).fetchone()[0]
            row = self._row(*ident)
            state = "closed" if row is None else row[0]
            if row is None:
                self._db.execute("INSERT INTO breakers (key, tenant, state, updated) "
                                 "VALUES (?, ?, 'closed', ?)", (*ident, now))
            if state == "open" or (state == "closed" and count < cfg.threshold):
                return None
            if state == "half_open" and (probe_at is None or row is None
                                         or row[2] != probe_at):
                return None  # not the probe's run: it proves nothing either way
            if state == "half_open" and known:
                # The probe's client is one already counted: its input, not the
                # function, may be what fails. Free the probe for another request.
                self._db.execute("UPDATE breakers SET probe_at=NULL WHERE key=? AND "
                                 "tenant=?", ident)
                return None
            denied = self._take_denied(ident) if state == "half_open" else 0
            until = now + cfg.cooldown
            self._db.execute(
                "UPDATE breakers SET state='open', opened_at=?, until=?, probe_at=NULL, count=?,"
                " trips=trips+1, updated=? WHERE key=? AND tenant=?",
                (now, until, count, now, *ident))
        reason = ("probe run violated a limit or failed" if state == "half_open"
                  else f"{count} violations within {cfg.window:g} s")
        return Transition(key, tenant, state, "open", now, count, until, reason, denied)

    def _notify(self, transition: Transition | None) -> None:
        if transition is not None and self._on_transition is not None:
            self._on_transition(transition)

    def entries(self, now: float | None = None) -> list[BreakerEntry]:
        """Every stored breaker, most recently changed first."""
        now = time.time() if now is None else now
        with self._lock:
            for ident in list(self._denied):
                self._flush(ident, now)
            rows = self._db.execute(
                "SELECT b.key, b.tenant, b.state, b.opened_at, b.until, b.trips, b.updated,"
                " (SELECT COUNT(*) FROM violations v WHERE v.key=b.key AND"
                "  v.tenant=b.tenant AND v.at>=?), b.denied FROM breakers b"
                " ORDER BY b.updated DESC", (now - self.config.window,)).fetchall()
        rows = [(*_checked(r[:7], "key tenant state opened_at until trips updated"),
                 r[7], *_checked(r[8:], "denied")) for r in rows]
        return [BreakerEntry(r[0], r[1] or None, r[2], r[7], r[3], r[4], r[5], r[6], r[8])
                for r in rows]

    def reset(self, key: str = "", tenant: str | None = None) -> list[BreakerEntry]:
        """Close and forget breakers: those whose key starts with `key` when it is a hex
        digest prefix, the one named `key` exactly otherwise, all when empty; only
        `tenant`'s when given. Returns the entries removed."""
        with self._lock:
            if all(c in "0123456789abcdef" for c in key):
                where, params = "key LIKE ?", [key + "%"]
            else:
                where, params = "key = ?", [key]
            if tenant is not None:
                where += " AND tenant=?"
                params.append(tenant)
            with self._tx():
                rows = self._db.execute(
                    f"SELECT key, tenant, state, opened_at, until, trips, updated, denied "
                    f"FROM breakers WHERE {where}", params).fetchall()
                rows = [_checked(r, "key tenant state opened_at until trips updated denied")
                        for r in rows]
                self._db.execute(f"DELETE FROM breakers WHERE {where}", params)
                self._db.execute(f"DELETE FROM violations WHERE {where}", params)
            for row in rows:
                ident = (row[0], row[1])
                self._probes.forget(ident)
                self._denied.pop(ident, None)
        return [BreakerEntry(r[0], r[1] or None, r[2], 0, r[3], r[4], r[5], r[6], r[7])
                for r in rows]

    def close(self) -> None:
        """Write pending refusal counts and close the database; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                for ident in list(self._denied):
                    self._flush(ident, time.time())
            except Exception:  # noqa: BLE001 - counts are advisory; closing must not fail
                pass
            self._db.close()

    def __enter__(self) -> Breaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _switch_to_wal(db: sqlite3.Connection, patience: float = 5.0) -> None:
    """Put the database in WAL mode. SQLite answers "database is locked" at once, without
    its busy handler, when another process opens the same new database at that moment
    (the gateway's workers start together): retry for `patience` seconds."""
    import sqlite3

    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)

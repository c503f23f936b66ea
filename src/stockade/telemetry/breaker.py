"""Circuit breakers per module digest (and tenant), shared by processes through SQLite.

    closed --N violations within the window--> open --cooldown over--> half_open
    half_open --probe ran clean--> closed;  half_open --probe violated--> open

`check` is what runs before a module: one indexed SELECT in the common case, no
wasmtime. `record` runs after it. State lives in `breaker.db` under the state
directory (WAL journal, busy timeout), so CLI runs and gateway workers see the same
breakers. Every transition is passed to `on_transition` (the audit log).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UsageError
from ..paths import state_dir
from ..result import Outcome, Result

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerEntry",
    "Decision",
    "Transition",
    "refusal_result",
    "iso_time",
    "default_path",
]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS breakers (digest TEXT NOT NULL, tenant TEXT NOT NULL,"
    " state TEXT NOT NULL, opened_at REAL, until REAL, probe_at REAL,"
    " count INTEGER NOT NULL DEFAULT 0, trips INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,"
    " PRIMARY KEY (digest, tenant))",
    "CREATE TABLE IF NOT EXISTS violations (digest TEXT NOT NULL, tenant TEXT NOT NULL, at REAL)",
    "CREATE INDEX IF NOT EXISTS violations_key ON violations (digest, tenant, at)",
    "PRAGMA user_version = 1",
)


def default_path() -> Path:
    """Where breakers are kept: `breaker.db` in the state directory."""
    return state_dir() / "breaker.db"


def iso_time(timestamp: float) -> str:
    """Local ISO-8601 time with offset, to the second."""
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


class BreakerConfig(NamedTuple):
    """`threshold` violations within `window` seconds open a breaker for `cooldown`
    seconds; a half-open probe not reported within `probe_timeout` is given up."""

    threshold: int = 3
    window: float = 60.0
    cooldown: float = 30.0
    probe_timeout: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BreakerConfig:
        """Defaults overridden by `STOCKADE_BREAKER_THRESHOLD`, `STOCKADE_BREAKER_WINDOW`
        and `STOCKADE_BREAKER_COOLDOWN` (durations like `60s`). Raises UsageError."""
        from ..policy.units import parse_duration

        env = os.environ if env is None else env
        config = cls()
        for key in ("WINDOW", "COOLDOWN"):
            raw = env.get(f"STOCKADE_BREAKER_{key}")
            if raw:
                try:
                    seconds = parse_duration(raw)
                except ValueError as exc:
                    raise UsageError(f"STOCKADE_BREAKER_{key}: {exc}") from None
                config = (config._replace(window=seconds) if key == "WINDOW"
                          else config._replace(cooldown=seconds))
        raw = env.get("STOCKADE_BREAKER_THRESHOLD")
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise UsageError(f"STOCKADE_BREAKER_THRESHOLD={raw!r}: use a positive integer")
            config = config._replace(threshold=int(raw))
        return config


class Decision(NamedTuple):
    """Whether a run may go ahead. `until` (epoch seconds) is set while open; `probe` is
    True for the one run let through half-open."""

    allowed: bool
    state: str
    message: str = ""
    until: float | None = None
    probe: bool = False

    @property
    def until_iso(self) -> str | None:
        """`until` as local ISO-8601 time."""
        return None if self.until is None else iso_time(self.until)


class Transition(NamedTuple):
    """A breaker changed state (`closed`, `open`, `half_open`)."""

    digest: str
    tenant: str | None
    old: str
    new: str
    at: float
    violations: int
    until: float | None
    reason: str


class BreakerEntry(NamedTuple):
    """One breaker as stored; `violations` counts those within the current window."""

    digest: str
    tenant: str | None
    state: str
    violations: int
    opened_at: float | None
    until: float | None
    trips: int
    updated: float


def refusal_result(decision: Decision, module: str, sha256: str) -> Result:
    """The `denied` Result of a run the breaker refused (exit code 126)."""
    return Result(module=module, sha256=sha256, outcome=Outcome.DENIED,
                  exit_code=Outcome.DENIED.exit_code, message=decision.message)


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
        # Probes this process was let through: only their clean end can close a breaker,
        # so other clean runs never touch the database.
        self._probes: set[tuple[str, str]] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != 1:
            # WAL lets readers (every `check`) proceed while another process writes.
            self._db.execute("PRAGMA journal_mode = WAL")
            with self._tx():
                for statement in _SCHEMA:
                    self._db.execute(statement)
        self._db.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _row(self, digest: str, tenant: str) -> tuple[str, float | None, float | None, int] | None:
        row = self._db.execute(
            "SELECT state, until, probe_at, count FROM breakers WHERE digest=? AND tenant=?",
            (digest, tenant)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def check(self, digest: str, tenant: str | None = None, now: float | None = None) -> Decision:
        """May the module with this digest run now (for this tenant)?"""
        now = time.time() if now is None else now
        key = tenant or ""
        transition = None
        with self._lock:
            row = self._row(digest, key)
            if row is None or row[0] == "closed":
                return Decision(True, "closed")
            if row[0] == "open" and row[1] is not None and now < row[1]:
                return Decision(False, "open", self._refusal(digest, row[1], row[3]), row[1])
            with self._tx():
                row = self._row(digest, key)
                if row is None or row[0] == "closed":
                    return Decision(True, "closed")
                state, until, probe_at, count = row
                if state == "open" and until is not None and now < until:
                    return Decision(False, "open", self._refusal(digest, until, count), until)
                if state == "half_open" and probe_at is not None and (
                        now - probe_at < self.config.probe_timeout):
                    return Decision(False, "half_open", (
                        f"module {digest[:12]} is refused: its circuit breaker lets one probe "
                        f"run through and that run is still going (since {iso_time(probe_at)})"))
                self._db.execute(
                    "UPDATE breakers SET state='half_open', probe_at=?, updated=? "
                    "WHERE digest=? AND tenant=?", (now, now, digest, key))
                if state == "open":
                    transition = Transition(digest, tenant, "open", "half_open", now, count,
                                            None, "cooldown over: one probe run let through")
                self._probes.add((digest, key))
        self._notify(transition)
        return Decision(True, "half_open", "probe run after cooldown", probe=True)

    def _refusal(self, digest: str, until: float, count: int) -> str:
        return (f"module {digest[:12]} is refused until {iso_time(until)}: its circuit breaker "
                f"opened after {count} violations within {self.config.window:g} s "
                f"(`stockade breaker reset {digest[:12]}` closes it)")

    def record(self, digest: str, tenant: str | None, violated: bool,
               now: float | None = None) -> Transition | None:
        """Report how a run of the module ended; returns the transition it caused, if any."""
        if not violated and not self._probes:
            return None  # only a probe run of this process can close a breaker
        now = time.time() if now is None else now
        key = tenant or ""
        cfg = self.config
        transition: Transition | None
        with self._lock:
            if not violated:
                if (digest, key) not in self._probes:
                    return None
                self._probes.discard((digest, key))
                row = self._row(digest, key)
                if row is None or row[0] != "half_open":
                    return None
                with self._tx():
                    self._db.execute("DELETE FROM violations WHERE digest=? AND tenant=?",
                                     (digest, key))
                    self._db.execute(
                        "UPDATE breakers SET state='closed', probe_at=NULL, until=NULL, count=0,"
                        " updated=? WHERE digest=? AND tenant=?", (now, digest, key))
                transition = Transition(digest, tenant, "half_open", "closed", now, 0, None,
                                        "probe run ended without a violation")
            else:
                self._probes.discard((digest, key))
                transition = self._violation(digest, tenant, key, now, cfg)
        self._notify(transition)
        return transition

    def _violation(self, digest: str, tenant: str | None, key: str, now: float,
                   cfg: BreakerConfig) -> Transition | None:
        with self._tx():
            self._db.execute("DELETE FROM violations WHERE digest=? AND tenant=? AND at<?",
                             (digest, key, now - cfg.window))
            self._db.execute("INSERT INTO violations VALUES (?, ?, ?)", (digest, key, now))
            count = self._db.execute(
                "SELECT COUNT(*) FROM violations WHERE digest=? AND tenant=?",
                (digest, key)).fetchone()[0]
            row = self._row(digest, key)
            state = "closed" if row is None else row[0]
            if row is None:
                self._db.execute("INSERT INTO breakers (digest, tenant, state, updated) "
                                 "VALUES (?, ?, 'closed', ?)", (digest, key, now))
            if state == "open" or (state == "closed" and count < cfg.threshold):
                return None
            until = now + cfg.cooldown
            self._db.execute(
                "UPDATE breakers SET state='open', opened_at=?, until=?, probe_at=NULL, count=?,"
                " trips=trips+1, updated=? WHERE digest=? AND tenant=?",
                (now, until, count, now, digest, key))
        reason = ("probe run violated a limit" if state == "half_open"
                  else f"{count} violations within {cfg.window:g} s")
        return Transition(digest, tenant, state, "open", now, count, until, reason)

    def _notify(self, transition: Transition | None) -> None:
        if transition is not None and self._on_transition is not None:
            self._on_transition(transition)

    def entries(self, now: float | None = None) -> list[BreakerEntry]:
        """Every stored breaker, most recently changed first."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT b.digest, b.tenant, b.state, b.opened_at, b.until, b.trips, b.updated,"
                " (SELECT COUNT(*) FROM violations v WHERE v.digest=b.digest AND"
                "  v.tenant=b.tenant AND v.at>=?) FROM breakers b ORDER BY b.updated DESC",
                (now - self.config.window,)).fetchall()
        return [BreakerEntry(r[0], r[1] or None, r[2], r[7], r[3], r[4], r[5], r[6])
                for r in rows]

    def reset(self, digest_prefix: str = "", tenant: str | None = None) -> list[BreakerEntry]:
        """Close and forget the breakers whose digest starts with `digest_prefix` (all when
        empty), only `tenant`'s when given. Returns the entries removed."""
        with self._lock:
            pattern = digest_prefix.replace("%", "").replace("_", "") + "%"
            where = "digest LIKE ?" + (" AND tenant=?" if tenant is not None else "")
            params: tuple[str, ...] = (pattern,) + ((tenant,) if tenant is not None else ())
            with self._tx():
                rows = self._db.execute(
                    f"SELECT digest, tenant, state, opened_at, until, trips, updated "
                    f"FROM breakers WHERE {where}", params).fetchall()
                self._db.execute(f"DELETE FROM breakers WHERE {where}", params)
                self._db.execute(f"DELETE FROM violations WHERE {where}", params)
        return [BreakerEntry(r[0], r[1] or None, r[2], 0, r[3], r[4], r[5], r[6]) for r in rows]

    def close(self) -> None:
        """Close the database connection; safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Breaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The circuit breakers kept in Redis, as stored records: listed and reset by
`RedisBreakers` inside a gateway, and by `stockade breaker list|reset` through
`SharedBreakers` when the manifest's `[state] backend` is a Redis URL.

A breaker is the hash `stockade:{TENANT}:b:KEY` with its recent violations beside it
in `stockade:{TENANT}:v:KEY` (`keys.py`); resetting one deletes both, so the next
admission on any replica finds it closed (replicas that cached it open see that
within `REFUSAL_CACHE`).

A listing reads a store it may not trust, so it ends within bounds whatever that
answers: `LISTING_SECONDS`, `MAX_SCANS` pages, `MAX_BREAKERS` names, `MAX_KEPT`
characters kept in all. A key it cannot read as a breaker is skipped, not the listing
failed, and the keys skipped are counted in one warning: a name over `MAX_NAME`
characters (a real one is under 200), a key of the wrong type (a stray SET made every
`list` and `reset` fail). A field over `MAX_NAME`, like one that is no number, is read
as missing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping

import redis

from ..telemetry.breaker import BreakerConfig, BreakerEntry
from .client import connect
from .errors import StateUnavailable
from .keys import PREFIX, token
from .resp import number
from .settings import StateSettings

__all__ = ["SharedBreakers", "breaker_entries", "reset_breakers"]

logger = logging.getLogger("stockade.state")

# What a reply of the wrong shape raises where it is read (a TIME of one element, a key
# that is no text, a reply nested past the stack).
_BAD_REPLY = (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError)
# A listing ends within these, whatever the store answers: a SCAN cursor that never came
# back to 0 kept `breaker list` asking for ever (found by review).
LISTING_SECONDS = 60.0
MAX_SCANS = 20_000  # pages of up to 500 names
MAX_BREAKERS = 100_000
# Each bound alone let a listing keep 100,000 names of 16 MiB: pages of one 8 MB name
# grew `breaker list` to 2.9 GB in 30 s (found by review). A real name is prefix, tenant
# and key, each of at most 80 (`keys.token`): under 200 characters.
MAX_NAME = 1024  # characters of a name, or of a field, kept
MAX_KEPT = 64 * 1024**2  # characters of names and fields kept in all (~300 a breaker)


class ListingUnbounded(Exception):
    """The store's breakers did not end within the listing's bounds."""


def _float(fields: Mapping[str, str], name: str) -> float | None:
    """A stored number, None when missing or not one (`resp.number`: `inf` and `1e20`
    are none either): one bad field (a stray write) made `breaker list` and `reset` fail
    for every breaker, that one included (review)."""
    try:
        return number(fields.get(name) or "")
    except (ValueError, TypeError):
        return None


def _int(fields: Mapping[str, str], name: str) -> int:
    value = _float(fields, name)
    return 0 if value is None else int(value)


def _text(fields: Mapping[str, str], name: str, default: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_NAME else default


def breaker_entries(client: redis.Redis, window: float,
                    prefix: str = PREFIX) -> list[BreakerEntry]:
    """Every breaker stored under `prefix`, most recently changed first; its violations
    are those within the window its gateways count in (stored with it; `window` seconds
    for one stored before), not older ones, dropped only by the next violation."""
    return [entry for _, entry in _stored(client, window, prefix)]


def _stored(client: redis.Redis, window: float, prefix: str,
            deadline: float | None = None) -> list[tuple[str, BreakerEntry]]:
    """(key name, entry) of every breaker under `prefix`, most recently changed first.
    Its key and tenant are those its name holds: a stored field is shown only when its
    name is that field's (a stray write listed one tenant's breaker as another's, and the
    audit log recorded the reset of a breaker that was not reset; found by review).
    Keys it cannot read as breakers are skipped, and counted in one warning (see the
    module docstring). Raises ListingUnbounded past `LISTING_SECONDS`, `MAX_BREAKERS`
    or `MAX_KEPT`."""
    found: list[tuple[str, BreakerEntry]] = []
    notes: Counter[str] = Counter()  # keys not read whole, by what was said of them
    first: dict[str, str] = {}  # the first key of each
    kept = 0
    deadline = time.monotonic() + LISTING_SECONDS if deadline is None else deadline
    seconds, micros = client.time()  # type: ignore[misc]
    # Violations are scored by Redis's clock: two numbers, not 400 digits.
    now = number(str(seconds)) + number(str(micros)) / 1e6
    try:
        for count, name in enumerate(_names(client, prefix, deadline), 1):
            # Every name costs two calls, each within the store's timeout: the bounds
            # count names and time them, not pages alone (a page of slow names ran for
            # minutes, found by review).
            if count > MAX_BREAKERS or time.monotonic() > deadline:
                raise ListingUnbounded(f"more than {count - 1} breakers in "
                                       f"{LISTING_SECONDS:g} s" if count <= MAX_BREAKERS
                                       else f"more than {MAX_BREAKERS} breakers")
            if len(name) > MAX_NAME:  # dropped here: only this page holds it
                note = f"{{n}} name{{s}} over {MAX_NAME} characters skipped"
                notes[note] += 1
                first.setdefault(note, name[:81])  # enough to show (`_shown`)
                continue
            try:
                fields: dict[str, str] = client.hgetall(name)  # type: ignore[assignment]
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                notes[_WRONG_TYPE] += 1
                first.setdefault(_WRONG_TYPE, name)
                continue
            if not fields:
                continue
            tag, _, breaker = name.partition("}:b:")  # a tenant's token never holds a brace
            since = now - (_float(fields, "window") or window)
            try:
                violations: int = client.zcount(  # type: ignore[assignment]
                    f"{tag}}}:v:{breaker}", since, "+inf")
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                # Listed (and reset, both keys) without them: the breaker is one.
                notes[_NO_VIOLATIONS] += 1
                first.setdefault(_NO_VIOLATIONS, name)
                violations = 0
            entry = BreakerEntry(
                _named(fields, "key", breaker), _named(fields, "tenant", tag[len(prefix) + 2:])
                or None, _text(fields, "state", "closed"), int(violations),
                _float(fields, "opened_at"), _float(fields, "until"), _int(fields, "trips"),
                _float(fields, "updated") or 0.0, _int(fields, "denied"))
            kept += len(name) + len(entry.key) + len(entry.tenant or "") + len(entry.state)
            if kept > MAX_KEPT:
                raise ListingUnbounded(f"more than {MAX_KEPT // 1024} KiB of names and fields")
            found.append((name, entry))
    finally:
        if notes:
            logger.warning("shared breakers: %s", "; ".join(
                note.format(n=n, s="s" if n != 1 else "") + (
                    f" ({_shown(first[note])}{', …' if n > 1 else ''})" if note in first
                    else "") for note, n in notes.items()))
    return sorted(found, key=lambda stored: stored[1].updated, reverse=True)


_WRONG_TYPE = "{n} key{s} of the wrong type skipped"
_NO_VIOLATIONS = "{n} breaker{s} listed without violations (a key of the wrong type)"


def _wrong_type(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a command for the type of the key it named."""
    return str(exc).startswith("WRONGTYPE")


def _shown(name: str) -> str:
    """A key name for a line of text: quoted, escaped, cut at 80 characters."""
    return repr(name[:80] + ("…" if len(name) > 80 else ""))


def _names(client: redis.Redis, prefix: str, deadline: float) -> Iterator[str]:
    """The names of the breakers under `prefix`, by SCAN, until `deadline` (monotonic)
    and `MAX_SCANS` pages at most. Raises ListingUnbounded past either."""
    cursor, scans = 0, 0
    while True:
        cursor, names = client.scan(cursor, match=f"{prefix}:{{*}}:b:*",  # type: ignore[misc]
                                    count=500)
        yield from names
        if not cursor:
            return
        scans += 1
        if scans >= MAX_SCANS or time.monotonic() > deadline:
            raise ListingUnbounded(f"no end after {scans} SCAN pages")


def _named(fields: Mapping[str, str], name: str, part: str) -> str:
    """The stored field `name` when the key name's `part` is its token, else `part`."""
    value = _text(fields, name, "")
    return value if value and token(value) == part else part


def reset_breakers(client: redis.Redis, window: float, key: str = "",
                   tenant: str | None = None, prefix: str = PREFIX,
                   removed: list[BreakerEntry] | None = None) -> list[BreakerEntry]:
    """Delete the breakers named `key` exactly (all when empty), only `tenant`'s when
    given, with their violations. Returns the entries removed, appended to `removed` as
    each goes (so a reset cut short still tells which went: they were not audited, found
    by review). Chosen and deleted by their key names, not by the fields stored in them:
    a stray write to `tenant` made a reset delete another tenant's breaker, and miss its
    own (found by review)."""
    removed = [] if removed is None else removed
    deadline = time.monotonic() + LISTING_SECONDS  # the deletes' too (found by review)
    for name, entry in _stored(client, window, prefix, deadline):
        tag, _, breaker = name.partition("}:b:")
        if (key and breaker != token(key)) or \
                (tenant is not None and tag != f"{prefix}:{{{token(tenant)}"):
            continue
        if time.monotonic() > deadline:
            raise ListingUnbounded(f"{len(removed)} breakers reset in "
                                   f"{LISTING_SECONDS:g} s, the rest not")
        client.delete(name, f"{tag}}}:v:{breaker}")
        removed.append(entry)
    return removed


class SharedBreakers:
    """The breakers in the Redis `settings` name, for people: every failure to reach or
    use it is a StateUnavailable naming the store. `close()` twice is safe."""

    def __init__(self, settings: StateSettings, env: Mapping[str, str] | None = None,
                 prefix: str = PREFIX) -> None:
        self.settings = settings
        self.prefix = prefix
        self.window = BreakerConfig.from_env(env).window  # as the gateways count
        self.client = connect(settings, env, "stockade-cli")

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(exc, redis.ResponseError):
            return StateUnavailable(f"shared state {self.settings.backend} refused: {reason}")
        if isinstance(exc, ListingUnbounded):
            return StateUnavailable(f"shared state {self.settings.backend}: its breakers did "
                                    f"not end ({reason}); refused")
        return StateUnavailable(f"shared state {self.settings.backend} is unreachable "
                                f"({reason}): the breakers of [state] backend live there")

    def entries(self) -> list[BreakerEntry]:
        """Every shared breaker, most recently changed first. Raises StateUnavailable."""
        try:
            return breaker_entries(self.client, self.window, self.prefix)
        except (redis.RedisError, OSError, ListingUnbounded, *_BAD_REPLY) as exc:
            raise self._unavailable(exc) from None

    def reset(self, key: str = "", tenant: str | None = None,
              removed: list[BreakerEntry] | None = None) -> list[BreakerEntry]:
        """Close and forget shared breakers (see `reset_breakers`; those removed are
        appended to `removed` as they go). Raises StateUnavailable."""
        try:
            return reset_breakers(self.client, self.window, key, tenant, self.prefix,
                                  removed)
        except (redis.RedisError, OSError, ListingUnbounded, *_BAD_REPLY) as exc:
            raise self._unavailable(exc) from None

    def close(self) -> None:
        """Drop the connection. Safe twice."""
        self.client.close()

    def __enter__(self) -> SharedBreakers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

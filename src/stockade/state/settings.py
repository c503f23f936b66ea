"""`[state]`: where quotas and circuit breakers live, and what happens when that is down.

    [state]
    backend = "redis://redis:6379/0"   # or "local" (the default: this server only)
    on_unavailable = "fail_closed"     # 503 while Redis is unreachable (to what needs it);
                                       # or "fail_open"
    timeout = "1s"                     # what an admission may wait for Redis in all, from
                                       # when it is asked (time queued, a wait for a
                                       # connection, a script reload included); also what
                                       # one round trip may take before Redis counts as
                                       # down, and each step of making a connection, which
                                       # goes on in the background when the admission
                                       # stops waiting

Credentials never go in the manifest: the password comes from `STOCKADE_REDIS_PASSWORD`
(else `REDIS_PASSWORD`), the user name from `STOCKADE_REDIS_USERNAME`; `rediss://`
uses TLS, checked against `STOCKADE_REDIS_CA_FILE` when set (else the system's CAs).

The URL is checked whole when the manifest is read: ASCII digits, a port from 1 to
65535, a database from 0 to `MAX_DATABASE`, no blanks or control characters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import PolicyError
from ..policy.units import parse_duration

__all__ = ["StateSettings", "parse_state", "redis_password", "POLICIES"]

POLICIES = ("fail_closed", "fail_open")
_KEYS = ("backend", "on_unavailable", "timeout")
MAX_DATABASE = 2**31 - 2  # Redis counts its databases in an int: 2^31 - 1 at most


@dataclass(frozen=True)
class StateSettings:
    """`backend` is `local` or a `redis://HOST:PORT/DB` / `rediss://…` URL without
    credentials; `on_unavailable` is `fail_closed` (503) or `fail_open` (this replica's
    own limits); `timeout` is what an admission may wait for Redis in all, from when it
    was asked (its time queued, its wait for a connection and a script reload included),
    what one round trip may take before the store counts as down, and each step of
    making a connection (`client`), in seconds."""

    backend: str = "local"
    on_unavailable: str = "fail_closed"
    timeout: float = 1.0

    @property
    def shared(self) -> bool:
        """True when the state is shared with other servers (a Redis URL)."""
        return self.backend != "local"


def redis_password(env: Mapping[str, str] | None = None) -> str | None:
    """The Redis password from the environment (`STOCKADE_REDIS_PASSWORD`, then
    `REDIS_PASSWORD`), or None."""
    env = os.environ if env is None else env
    return env.get("STOCKADE_REDIS_PASSWORD") or env.get("REDIS_PASSWORD") or None


def _backend(value: Any, where: str) -> str:
    """A Redis URL checked whole here, not where it is first used: `/²` (isdigit, but
    no int) was a traceback, a full-width `/１` database 1, port 0 redis-py's 6379, and a
    database past any Redis's or a host with a blank failed only at the first request
    (found by review)."""
    if value == "local":
        return "local"
    if not isinstance(value, str):
        raise PolicyError(f"{where}.backend: expected \"local\" or \"redis://HOST:PORT/DB\", "
                          f"not {value!r}")
    # Before urlsplit, which drops tabs and new lines anywhere and blanks at the ends.
    if not value.isprintable() or any(char.isspace() for char in value):
        raise PolicyError(f"{where}.backend: blanks or control characters in {value!r}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        raise PolicyError(f"{where}.backend: {exc}") from None
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise PolicyError(f"{where}.backend: expected \"local\" or \"redis://HOST:PORT/DB\" "
                          f"(rediss:// for TLS), not {value!r}")
    if url.username or url.password:
        raise PolicyError(f"{where}.backend: credentials do not belong in the manifest: "
                          "set STOCKADE_REDIS_PASSWORD (and STOCKADE_REDIS_USERNAME)")
    if port == 0:
        raise PolicyError(f"{where}.backend: the port is 1 to 65535, not 0")
    database = url.path.strip("/") or "0"
    # ASCII digits, and few enough for int() (it refuses 4,300 and more).
    if not (database.isascii() and database.isdigit() and len(database) <= 12) \
            or int(database) > MAX_DATABASE or url.query or url.fragment:
        raise PolicyError(f"{where}.backend: the path is a database number from 0 to "
                          f"{MAX_DATABASE}, e.g. redis://{url.hostname}:{port or 6379}/0")
    return f"{url.scheme}://{url.netloc}/{int(database)}"


def parse_state(table: Mapping[str, Any], source: str) -> StateSettings:
    """`[state]` into settings. Raises PolicyError naming the file and the key."""
    where = f"{source}: state"
    for key in table:
        if key not in _KEYS:
            raise PolicyError(f"{where}: unknown key state.{key} (known: {list(_KEYS)})")
    values: dict[str, Any] = {}
    if "backend" in table:
        values["backend"] = _backend(table["backend"], where)
    if "on_unavailable" in table:
        policy = table["on_unavailable"]
        if policy not in POLICIES:
            raise PolicyError(f"{where}.on_unavailable: expected one of "
                              f"{', '.join(POLICIES)}, not {policy!r}")
        values["on_unavailable"] = policy
    if "timeout" in table:
        try:
            seconds = parse_duration(table["timeout"])
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"{where}.timeout: {exc}") from None
        if not 0 < seconds <= 10:
            raise PolicyError(f"{where}.timeout: expected a duration above 0 and at most "
                              f"10s, not {table['timeout']!r}")
        values["timeout"] = seconds
    return StateSettings(**values)

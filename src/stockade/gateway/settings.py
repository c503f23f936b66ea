"""Server settings (`[server]`) and quotas (`[tenant.NAME]`, per function) of a manifest.

Command-line flags override `[server]` (see `ServerSettings.override`), checked as its
keys are; every error names the file and the key (or the flag).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import PolicyError
from ..policy import parse_duration, parse_size
from ..policy.units import shown
from ..policy.values import MAX_TIMEOUT
from ..state.quota import Quota
from ..telemetry.profiles import PROFILE_NAMES
from .forwarded import parse_networks
from .headers import WITHHELD

__all__ = ["Quota", "ServerSettings", "parse_server", "parse_quota", "size_or_none",
           "EXECUTORS", "ACCESS_LOGS"]

EXECUTORS = ("auto", "fast", "sandbox")
ACCESS_LOGS = ("common", "json", "off")
MiB = 1024**2


@dataclass(frozen=True)
class ServerSettings:
    """How the gateway serves. Sizes in bytes, times in seconds.

    `threads` guest threads per worker process; `max_queue` requests per worker waiting
    for a thread before 503; `request_timeout` caps every function's timeout;
    `drain_timeout` bounds the SIGTERM drain, which begins with `drain_grace` of serving
    on while /readyz answers 503 (a load balancer stops sending first); `executor` is
    `auto` (the C-API fast path where a function qualifies), `fast` (the same, logged
    when a function does not) or `sandbox`; `telemetry` an export profile name,
    `default` or `off` (None: `STOCKADE_TELEMETRY`, else `hybrid`); `reuse_port` gives
    each worker its own SO_REUSEPORT socket instead of sharing one; `inline` lets short
    fast-path runs finish on the event loop thread (see `fastexec.py`); `pool_workers`
    is the number of warm confined processes in each cordon's worker pool, per gateway
    worker (see `pool.py`). `breakers` (circuit breakers per function and tenant), `breaker_traps`
    (traps count toward them; None: `STOCKADE_BREAKER_TRAPS`, else no) and `audit` (the
    audit log) are independent of `telemetry`: export `off` keeps them. With
    `breaker_clients` a client address's violations count once toward a function's
    breaker and a client whose runs keep hitting limits is refused alone
    (`clientbreaker.py`); off, behind a proxy that hides clients' addresses, every
    violation counts. Behind a proxy that sends `X-Forwarded-For`, `trusted_proxies` (its
    addresses or networks) makes its clients the clients counted (`forwarded.py`).

    Slow clients: a request head (line and headers, at most `max_header_size` bytes) must
    arrive within `header_timeout`, the heads a worker holds still arriving or queued behind
    an answer at most `header_buffer` bytes together, `header_buffer_per_client` of them for
    one client address (503 and closed past either, a header line counted as 100 bytes more
    than it is: its objects), and a body's bytes must keep coming: it has `body_timeout`,
    each byte adds `1 / body_min_rate` s, never past `body_timeout` ahead (408 otherwise;
    bodies are read before a function or tenant slot is taken), and the answers' bytes must
    keep leaving at the same pace (the connection aborted); a worker holds at most
    `body_buffer` bytes of request bodies at once, `body_buffer_per_client` of them for one
    client address (503 past either, `requestbudget.py`), and about `response_buffer` bytes
    of answers unsent (past it, connections are reset in the order `sendbudget.py` gives);
    an idle keep-alive connection is closed after `keep_alive_timeout`; one peer address
    holds at most `max_connections_per_ip` connections on the whole server (503 and closed
    past it, `connlimit.py`), which tracks `max_connection_addresses` addresses at once
    (past it, new ones get 503): an IPv4-mapped IPv6 address counts as its IPv4 address, an
    IPv6 address as its `/max_connections_ipv6_prefix` network (one host's /64 is one
    address). `withhold_headers` are the request headers no function is sent unless it lists
    them in `pass_headers` (`headers.py`).

    Logs (`funclog.py`, `accesslog.py`): `access_log` is `common` (Apache's Common Log
    Format), `json` (one object a line) or `off`; each request's function stderr is
    logged up to `stderr_limit` bytes (0: not captured); a function gets `log_rate`
    lines of stderr and failure reasons a second (bursts of 10 s worth), the rest are
    counted and reported as suppressed.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    threads: int = 8
    max_queue: int = 256
    max_body: int = 1 * MiB
    body_buffer: int = 64 * MiB
    body_buffer_per_client: int = 16 * MiB
    response_buffer: int = 64 * MiB
    max_response: int = 8 * MiB
    request_timeout: float = 30.0
    drain_timeout: float = 30.0
    drain_grace: float = 0.0
    executor: str = "auto"
    telemetry: str | None = None
    reuse_port: bool = False
    inline: bool = True
    breakers: bool = True
    breaker_clients: bool = True
    trusted_proxies: tuple[str, ...] = ()
    breaker_traps: bool | None = None
    audit: bool = True
    header_timeout: float = 10.0
    max_header_size: int = 64 * 1024
    header_buffer: int = 32 * MiB
    header_buffer_per_client: int = 4 * MiB
    body_timeout: float = 10.0
    body_min_rate: int = 1024
    keep_alive_timeout: float = 5.0
    max_connections_per_ip: int = 256
    max_connections_ipv6_prefix: int = 64
    max_connection_addresses: int = 65536
    withhold_headers: tuple[str, ...] = tuple(sorted(WITHHELD))
    pool_workers: int = 2
    access_log: str = "common"
    stderr_limit: int = 4096
    log_rate: float = 10.0

    def override(self, **changes: Any) -> ServerSettings:
        """A copy with the given settings (None values are ignored: flag not given),
        checked as `[server]`'s are: `--host ''` listened on every interface. Raises
        PolicyError naming the flag."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None:
                continue
            flag = f"--{key.replace('_', '-')}"
            parser = _SERVER_PARSERS.get(key)
            if parser is None:
                raise PolicyError(f"{flag}: not a server setting")
            try:
                values[key] = parser(value)
            except (ValueError, TypeError) as exc:
                raise PolicyError(f"{flag}: {exc}") from None
        return _heads_fit(replace(self, **values), "")


def _int(lo: int, hi: int) -> Any:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, not {shown(value)}")
        return int(value)
    return parse


def _choice(*choices: str) -> Any:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {value!r}")
        return str(value)
    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, not {value!r}")
    return value


# A host name or an address (`::1`, `fe80::1%eth0`): a NUL or a blank reached bind()
# as a start-up traceback.
_HOST = re.compile(r"[A-Za-z0-9._:%-]{1,253}")


def _host(value: Any) -> str:
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise ValueError(f"expected a host name or an IP address, not {shown(value)}")
    return value


def _seconds(value: Any) -> float:
    # Bounded as a policy's timeout: request_timeout becomes functions' timeouts, and
    # a wait of weeks overflows poll()'s milliseconds.
    seconds = parse_duration(value)
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ValueError(f"expected a positive duration like '10s', at most "
                         f"{MAX_TIMEOUT:.0f}s, not {shown(value)}")
    return seconds


def _grace(value: Any) -> float:
    seconds = parse_duration(value)
    if not 0 <= seconds <= 300:
        raise ValueError(f"expected a duration from '0s' to '5m', not {value!r}")
    return seconds


def _bytes(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"expected a positive size like '64KiB', not {value!r}")
    return size


def _size_or_zero(value: Any) -> int:
    size = parse_size(value)
    if not 0 <= size <= 1024**2:
        raise ValueError(f"expected a size from 0 to '1MiB', not {value!r}")
    return size


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= 100_000:
        raise ValueError(f"expected lines per second, above 0 and at most 100000, "
                         f"not {value!r}")
    return float(value)


def header_names(value: Any) -> tuple[str, ...]:
    """A list of HTTP header names, lower-cased. Raises ValueError for anything else."""
    if not isinstance(value, list) or not all(
            isinstance(v, str) and v and all(c.isalnum() or c in "-_" for c in v)
            for v in value):
        raise ValueError(f"expected a list of header names, not {value!r}")
    return tuple(sorted({v.lower() for v in value}))


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


_SERVER_PARSERS: dict[str, Any] = {
    "host": _host, "port": _int(0, 65535), "workers": _int(1, 64), "threads": _int(1, 256),
    "max_queue": _int(0, 100_000), "max_body": parse_size, "max_response": parse_size,
    "body_buffer": _bytes, "body_buffer_per_client": _bytes, "response_buffer": _bytes,
    "request_timeout": _seconds, "drain_timeout": _seconds,
    "drain_grace": _grace,
    "executor": _choice(*EXECUTORS), "telemetry": _choice("default", *PROFILE_NAMES),
    "reuse_port": _flag,
    "inline": _flag, "breakers": _flag, "breaker_clients": _flag, "breaker_traps": _flag,
    "audit": _flag, "trusted_proxies": parse_networks,
    "header_timeout": _seconds, "max_header_size": _bytes,
    "header_buffer": _bytes, "header_buffer_per_client": _bytes,
    "body_timeout": _seconds, "body_min_rate": _bytes, "keep_alive_timeout": _seconds,
    "max_connections_per_ip": _int(1, 1_000_000),
    "max_connections_ipv6_prefix": _int(32, 128),
    "max_connection_addresses": _int(64, 1_048_576),
    "withhold_headers": header_names, "pool_workers": _int(1, 32),
    "access_log": _choice(*ACCESS_LOGS), "stderr_limit": _size_or_zero, "log_rate": _rate,
}


def parse_server(table: Mapping[str, Any], source: str) -> ServerSettings:
    """`[server]` into settings. Raises PolicyError naming the key."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        parser = _SERVER_PARSERS.get(key)
        if parser is None:
            known = sorted(f.name for f in fields(ServerSettings))
            raise PolicyError(f"{source}: unknown key server.{key} (known: {known})")
        try:
            values[key] = parser(value)
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"{source}: server.{key}: {exc}") from None
    return _heads_fit(ServerSettings(**values), f"{source}: server.")


def _heads_fit(settings: ServerSettings, where: str) -> ServerSettings:
    """`settings`, checked that one client may send two heads at `max_header_size`.
    Raises PolicyError naming the settings at `where`."""
    room = min(settings.header_buffer, settings.header_buffer_per_client)
    if room < 2 * settings.max_header_size:
        raise PolicyError(f"{where}header_buffer and header_buffer_per_client must hold two "
                          f"heads at max_header_size ({settings.max_header_size} bytes), "
                          f"not {room}")
    return settings


MIN_RATE = 1e-6  # requests a second: one in 11.6 days


def _positive(value: Any) -> float:
    # inf is no rate: a bucket refilling infinitely fast (leave the key out for none); a
    # rate of 1e-310 made the wait before the next request infinite (a 500).
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"expected a positive number, not {value!r}")
    if value < MIN_RATE:
        raise ValueError(f"{value!r} is less than {MIN_RATE:g} a second (one request in "
                         "11.6 days)")
    return float(value)


MIN_CPU_PER_MINUTE = 1e-3  # seconds of guest CPU a minute


def _cpu_budget(value: Any) -> float:
    # A run overdraws a budget by what it used: 200 s against a microsecond a minute was
    # a wait of 380 years, past what the shared store's answer may hold. At a millisecond
    # a minute, a run of hours waits years, within it.
    seconds = parse_duration(value)
    if seconds < MIN_CPU_PER_MINUTE:
        raise ValueError(f"{shown(value)} is less than 1ms of CPU a minute")
    return seconds


_QUOTA_PARSERS: dict[str, Any] = {
    "concurrency": _int(1, 1_000_000), "rate": _positive, "burst": _int(1, 10_000_000),
    "cpu_per_minute": _cpu_budget,
}


def parse_quota(table: Mapping[str, Any], source: str, where: str,
                keys: Mapping[str, str]) -> Quota:
    """The quota in `table`; `keys` maps manifest keys to `Quota` fields (others are
    ignored). Raises PolicyError naming `where` and the key."""
    values: dict[str, Any] = {}
    for key, name in keys.items():
        if key in table:
            try:
                values[name] = _QUOTA_PARSERS[name](table[key])
            except (ValueError, TypeError) as exc:
                raise PolicyError(f"{source}: {where}.{key}: {exc}") from None
    return Quota(**values)


def size_or_none(value: Any, source: str, where: str) -> int | None:
    """A size in bytes, or None when not given. Raises PolicyError naming `where`."""
    if value is None:
        return None
    try:
        size = parse_size(value)
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"{source}: {where}: {exc}") from None
    if size <= 0:
        raise PolicyError(f"{source}: {where}: must be positive")
    return size

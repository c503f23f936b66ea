"""The Redis connection of the shared state, made one way for the gateway and the CLI.

Settings from the manifest's `[state]` (URL, timeout), credentials from the environment
(`settings.py`). No retries inside the client: one timeout is all a caller may wait.

redis-py's `socket_timeout` bounds each read, not a reply, and it takes the lengths a
reply announces on trust: a Redis (or a path to it) sending one byte every 0.3 s held
every admission of a worker for as long as it liked, `fail_closed` never applying, and a
reply announcing 4 GB grew the worker past 2.5 GB (found by review). So each
connection's socket (`_Bounded`) gives the replies to one request `timeout` seconds and
`MAX_REPLY` bytes in all, counted from the request sent.

An exchange of several requests gets one timeout in all inside `round_trip()`: every
connect, handshake, send and read its thread makes ends by the same deadline. A
timeout per request let one admission make 11 calls (a connection's handshake, the
script, NOSCRIPT, three loads, the script again) and answer after 5 s with a timeout of
0.5 s (found by review).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .settings import StateSettings, redis_password

__all__ = ["connect", "round_trip", "RoundTripFailed", "MAX_REPLY"]

MAX_REPLY = 16 * 1024**2  # bytes of replies to one request (an admission's are ~100 each)


class _Deadline(threading.local):
    """This thread's `round_trip`: when it ends (monotonic), and its seconds."""

    at = float("inf")
    seconds = 0.0


_ROUND = _Deadline()


def round_trip(seconds: float) -> _RoundTrip:
    """Every exchange this thread has with Redis inside (`with round_trip(...)`) ends
    within `seconds` from its start in all, connects and handshakes included (an outer
    round trip's end stays if sooner); past it a read, send or connect raises
    TimeoutError."""
    return _RoundTrip(seconds)


class _RoundTrip:
    """`round_trip`'s context: a class, on the path of every admission (a generator's
    context cost 3 µs, this one 1)."""

    __slots__ = ("seconds", "outer")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.outer = (float("inf"), 0.0)

    def __enter__(self) -> None:
        self.outer = _ROUND.at, _ROUND.seconds
        at = time.monotonic() + self.seconds
        if at < self.outer[0]:
            _ROUND.at, _ROUND.seconds = at, self.seconds

    def __exit__(self, *exc: object) -> None:
        _ROUND.at, _ROUND.seconds = self.outer


def _round_left() -> float | None:
    """Seconds left of this thread's round trip (None outside one). Raises TimeoutError
    once it is over."""
    if _ROUND.at == float("inf"):
        return None
    left = _ROUND.at - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no answer within {_ROUND.seconds:g} s")
    return left


class RoundTripFailed(Exception):
    """Redis did not answer usefully (unreachable, timed out, a script failed); the
    message says why. Callers decide what that means (`on_unavailable`)."""


def connect(settings: StateSettings, env: Mapping[str, str] | None = None,
            name: str = "stockade") -> redis.Redis:
    """A client of the Redis `settings.backend` names (not connected yet: the first
    command connects), answering text; `name` is its CLIENT name (with the PID)."""
    env = os.environ if env is None else env
    options: dict[str, Any] = {}
    if settings.backend.startswith("rediss://") and env.get("STOCKADE_REDIS_CA_FILE"):
        options["ssl_ca_certs"] = env["STOCKADE_REDIS_CA_FILE"]
    scheme = settings.backend.split("://", 1)[0]
    options["connection_class"] = _BOUNDED.get(scheme, _BoundedConnection)
    return redis.Redis.from_url(
        settings.backend, password=redis_password(env),
        username=env.get("STOCKADE_REDIS_USERNAME") or None,
        socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        # Text that is not UTF-8 (a stray write) is read with U+FFFD, not raised: one
        # such field made `breaker list` fail for every breaker (found by review).
        decode_responses=True, encoding_errors="replace",
        client_name=f"{name}-{os.getpid()}", **options)


class _Bounded:
    """A connection's socket whose replies to one request (from its `sendall` on) get
    `timeout` seconds and `MAX_REPLY` bytes in all, and whose sends and reads end with
    this thread's `round_trip`; everything else is the socket's."""

    __slots__ = ("_sock", "_timeout", "_requested", "_deadline", "_left")

    def __init__(self, sock: Any, timeout: float | None) -> None:
        self._sock = sock
        self._timeout = timeout
        self._requested: float | None = timeout  # what the caller last set
        self._deadline = float("inf")
        self._left = MAX_REPLY

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, value: float | None) -> None:
        self._requested = value
        self._sock.settimeout(value)

    def sendall(self, data: bytes, *flags: int) -> None:
        if self._timeout is not None:
            self._deadline = time.monotonic() + self._timeout
        self._left = MAX_REPLY
        # A request alone has the socket's timeout; what is left of a round trip, less.
        cut = _ROUND.at != float("inf") and self._before()
        try:
            self._sock.sendall(data, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)

    def recv(self, size: int, *flags: int) -> bytes:
        cut = self._before()
        try:
            data: bytes = self._sock.recv(size, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)
        self._count(len(data))
        return data

    def recv_into(self, buffer: Any, size: int = 0, *flags: int) -> int:
        cut = self._before()
        try:
            count: int = self._sock.recv_into(buffer, size, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)
        self._count(count)
        return count

    def _before(self) -> bool:
        """Wait no longer than what is left of the reply's time or of the round trip's
        (a caller's poll, a timeout of 0, stays one); whether the socket's timeout was
        cut for this read or send."""
        end = min(self._deadline, _ROUND.at)
        if self._requested == 0 or end == float("inf"):
            return False
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {_ROUND.seconds:g} s" if end == _ROUND.at
                               else f"no whole reply within {self._timeout:g} s")
        self._sock.settimeout(left if self._requested is None else min(left, self._requested))
        return True

    def _count(self, count: int) -> None:
        self._left -= count
        if self._left < 0:
            raise redis.ConnectionError(f"a reply of over {MAX_REPLY // 1024**2} MiB")


class _BoundsReplies:
    """Mixed into redis-py's connection classes: their socket is a `_Bounded` one."""

    socket_timeout: float | None
    socket_connect_timeout: float | None

    def _connect(self) -> Any:
        left = _round_left()
        if left is None:
            return _Bounded(super()._connect(), self.socket_timeout)  # type: ignore[misc]
        # Inside a round trip the connect and a TLS handshake end with it too; the
        # socket keeps its own timeout for what follows (`_Bounded` cuts each use).
        timeouts = self.socket_connect_timeout, self.socket_timeout
        self.socket_connect_timeout = min(left, timeouts[0] or left)
        self.socket_timeout = min(left, timeouts[1] or left)
        try:
            sock = super()._connect()  # type: ignore[misc]
        finally:
            self.socket_connect_timeout, self.socket_timeout = timeouts
        sock.settimeout(self.socket_timeout)
        return _Bounded(sock, self.socket_timeout)


class _BoundedConnection(_BoundsReplies, redis.Connection):
    pass


class _BoundedSSLConnection(_BoundsReplies, redis.SSLConnection):
    pass


class _BoundedUnixConnection(_BoundsReplies, redis.UnixDomainSocketConnection):
    pass


_BOUNDED: dict[str, type[redis.Connection] | type[redis.UnixDomainSocketConnection]] = {
    "redis": _BoundedConnection, "rediss": _BoundedSSLConnection,
    "unix": _BoundedUnixConnection}

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
send and read its thread makes ends by the same deadline, counted from its first
request sent. A timeout per request let one admission make 11 calls (a connection's
handshake, the script, NOSCRIPT, three loads, the script again) and answer after 5 s
with a timeout of 0.5 s (found by review).

A connection is made off the round trip's path, on a thread of its own: resolving the
name, connecting, TLS and the handshake (AUTH, CLIENT SETNAME, CLIENT SETINFO twice,
SELECT), each step within `timeout`. The round trip waits for it as long as its caller
says (`round_trip`'s `wait`), then raises ConnectionPending: not the store's failure,
and the connection is still made, and kept, for the next. A step that fails is raised
to whoever waits, or else to the next to ask for the connection. Counting that wait as
the round trip's own time, a store answering each command after a quarter of the
timeout never admitted anyone: a handshake ending inside the wait left the script too
little, so it timed out, the connection was dropped and the store marked down;
`getaddrinfo`, which has no timeout, held the admission as long as a dead resolver
liked. Outside a round trip (`stockade breaker list`) a connection is made on the
caller's thread, each step within `timeout`, the name's resolution too (`resolve`).

A caller that waits for the answer on the round trip's own thread (an admission off an
event loop) says until when (`answer_by`): once the round trip has waited for a
connection being made, reads end then too (without a wait the store's time, from the
first send, ends within microseconds of it), and a read cut by it while the store
still has time (`answer_late`) leaves the connection whole, its answers to be read by
another thread within what is left of the store's time (`continued`). A wait for a
fresh connection then a script with a whole timeout of its own took up to twice the
timeout; cut at the caller's end and the connection dropped, a store answering each
command in 0.28 of the timeout would never be used.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .settings import StateSettings, redis_password

__all__ = ["connect", "round_trip", "continued", "answer_late", "store_deadline", "resolve",
           "AnswerLate", "ConnectionPending", "RoundTripFailed", "MAX_REPLY"]

MAX_REPLY = 16 * 1024**2  # bytes of replies to one request (an admission's are ~100 each)


class _Deadline(threading.local):
    """This thread's `round_trip`: when it ends (monotonic; inf until its first send),
    its seconds, until when it waits for a connection (inf outside one), and until
    when its caller waits for answers: `caller_until` as given, `answer_by` once in
    force (inf: as long as the store's time lasts)."""

    at = float("inf")
    seconds = 0.0
    wait_until = float("inf")
    caller_until = float("inf")
    answer_by = float("inf")


_ROUND = _Deadline()


def round_trip(seconds: float, wait: float | None = None,
               answer_by: float | None = None) -> _RoundTrip:
    """Every exchange this thread has with Redis inside (`with round_trip(...)`) ends
    within `seconds` in all from its first request sent; past it a read or send raises
    TimeoutError. A wait for a connection being made lasts `wait` seconds from now at
    most (`seconds` when None), then raises ConnectionPending. Once it has waited for
    one, reads end by `answer_by` (monotonic) too, when given: see `answer_late`.
    Not nested."""
    return _RoundTrip(seconds, wait, answer_by)


def continued(at: float, seconds: float) -> _RoundTrip:
    """A round trip another thread started, its store's time (`seconds`) ending `at`
    (monotonic): for reading the answers its caller no longer waited for."""
    trip = _RoundTrip(seconds, None, None)
    trip.at = at
    return trip


def answer_late() -> bool:
    """Whether this thread's round trip passed its `answer_by` with the store's own time
    not over: what timed out was the caller's wait, not the store, and the connection
    is whole (its replies are owed, not lost)."""
    now = time.monotonic()
    return _ROUND.answer_by <= now < _ROUND.at


def store_deadline() -> float:
    """When this thread's round trip's store time ends (monotonic; inf before its first
    request is sent)."""
    return _ROUND.at


class ConnectionPending(Exception):
    """A round trip's wait for a connection ended while it was still being made (it
    is kept for the next): the store did not fail."""


class AnswerLate(Exception):
    """A round trip's caller stopped waiting (its `answer_by`) while the store still had
    time to answer; its answers are read on another thread: the store did not fail."""


class _RoundTrip:
    """`round_trip`'s context: a class, on the path of every admission (a generator's
    context cost 3 µs, this one 1)."""

    __slots__ = ("seconds", "wait", "answer_by", "at")

    def __init__(self, seconds: float, wait: float | None, answer_by: float | None) -> None:
        self.seconds = seconds
        self.wait = seconds if wait is None else wait
        self.answer_by = float("inf") if answer_by is None else answer_by
        self.at = float("inf")  # from the first request sent, unless `continued`

    def __enter__(self) -> None:
        _ROUND.at, _ROUND.seconds = self.at, self.seconds
        _ROUND.wait_until = time.monotonic() + self.wait
        _ROUND.caller_until, _ROUND.answer_by = self.answer_by, float("inf")

    def __exit__(self, *exc: object) -> None:
        _ROUND.at, _ROUND.wait_until = float("inf"), float("inf")
        _ROUND.caller_until = _ROUND.answer_by = float("inf")


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
        if _ROUND.at == float("inf") and _ROUND.wait_until != float("inf"):
            # The round trip's time starts with its first request, not before: a wait
            # for the connection is not the store's answering.
            _ROUND.at = time.monotonic() + _ROUND.seconds
        # A request alone has the socket's timeout; what is left of a round trip, less.
        cut = _ROUND.at != float("inf") and self._before(False)
        try:
            self._sock.sendall(data, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)

    def recv(self, size: int, *flags: int) -> bytes:
        cut = self._before(True)
        try:
            data: bytes = self._sock.recv(size, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)
        self._count(len(data))
        return data

    def recv_into(self, buffer: Any, size: int = 0, *flags: int) -> int:
        cut = self._before(True)
        try:
            count: int = self._sock.recv_into(buffer, size, *flags)
        finally:
            if cut:
                self._sock.settimeout(self._requested)
        self._count(count)
        return count

    def _before(self, reading: bool) -> bool:
        """Wait no longer than what is left of the reply's time or of the round trip's,
        or, `reading`, of its caller's (a caller's poll, a timeout of 0, stays one);
        whether the socket's timeout was cut for this read or send."""
        end = min(self._deadline, _ROUND.at)
        if reading and _ROUND.answer_by < end:
            end = _ROUND.answer_by  # a request once sent is sent whole: never cut
        if self._requested == 0 or end == float("inf"):
            return False
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {_ROUND.seconds:g} s" if end == _ROUND.at
                               else "its caller waits no more" if end == _ROUND.answer_by
                               else f"no whole reply within {self._timeout:g} s")
        self._sock.settimeout(left if self._requested is None else min(left, self._requested))
        return True

    def _count(self, count: int) -> None:
        self._left -= count
        if self._left < 0:
            raise redis.ConnectionError(f"a reply of over {MAX_REPLY // 1024**2} MiB")


_Addresses = list[tuple[Any, ...]]
_LOOKUPS: dict[tuple[str, int, int], concurrent.futures.Future[_Addresses]] = {}
_LOOKUPS_LOCK = threading.Lock()


def _forget_lookups() -> None:
    # A child has none of its parent's threads: their lookups would never end there.
    global _LOOKUPS_LOCK
    _LOOKUPS.clear()
    _LOOKUPS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_lookups)


def resolve(host: str, port: int, family: int = 0,
            timeout: float | None = None) -> _Addresses:
    """`socket.getaddrinfo` of a TCP `host`, within `timeout` seconds (None: as long as
    it takes). A name is looked up on a thread of its own, one lookup of it at a time
    however many wait (a resolver that never answers holds one thread, not one per
    connection). Raises TimeoutError past `timeout`, OSError as getaddrinfo does."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address: nothing to ask a resolver
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    key = (host, port, family)
    with _LOOKUPS_LOCK:
        lookup = _LOOKUPS.get(key)
        if lookup is None:
            lookup = _LOOKUPS[key] = concurrent.futures.Future()
            threading.Thread(target=_look_up, args=(key, lookup), daemon=True,
                             name="stockade-state-resolve").start()
    try:
        return lookup.result(timeout)
    except TimeoutError:
        if lookup.done():
            raise
        raise TimeoutError(f"{host} not resolved within {timeout:g} s") from None


def _look_up(key: tuple[str, int, int], lookup: concurrent.futures.Future[_Addresses]) -> None:
    host, port, family = key
    try:
        addresses = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
        with _LOOKUPS_LOCK:
            _LOOKUPS.pop(key, None)
        lookup.set_exception(exc)
    else:
        with _LOOKUPS_LOCK:
            _LOOKUPS.pop(key, None)
        lookup.set_result(addresses)


class _Resolving(redis.Connection):
    """redis-py's TCP connect, its name resolved by `resolve` within the connect timeout
    (redis-py calls `getaddrinfo`, which has no timeout)."""

    def _connect(self) -> socket.socket:
        error: OSError | None = None
        for family, kind, proto, _, address in resolve(
                self.host, self.port, self.socket_type, self.socket_connect_timeout):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in self.socket_keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
            except OSError as exc:
                error = exc
                sock.close()
                continue
            sock.settimeout(self.socket_timeout)
            return sock
        raise error or OSError(f"{self.host}: no address")


class _BoundsReplies:
    """Mixed into redis-py's connection classes: their socket is a `_Bounded` one, and
    inside a round trip they are made on a thread of their own (see the module
    docstring)."""

    socket_timeout: float | None
    _sock: Any
    _making: concurrent.futures.Future[None] | None = None  # the connect under way
    _failed: tuple[BaseException, float] | None = None  # a connect's error nobody saw
    _drops = 0  # disconnects so far: one during a connect drops what it made

    def _connect(self) -> Any:
        return _Bounded(super()._connect(), self.socket_timeout)  # type: ignore[misc]

    def connect(self) -> None:
        self._ready(True)

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        self._ready(check_health)

    def disconnect(self, *args: Any) -> None:
        self._drops += 1
        super().disconnect(*args)  # type: ignore[misc]

    def _ready(self, check_health: bool) -> None:
        """Connected, or raise. Called by the connection's holder (from its pool) only;
        while it is being made, whoever holds it waits for that (inside a round trip no
        longer than its `wait`, then ConnectionPending), never uses it half made. A
        connect that failed while nobody waited is raised to the next holder within a
        timeout of its failure (a store that is down is marked so), once."""
        making = self._making
        if making is None or making.done():
            if self._sock is not None:
                return
            failed, self._failed = self._failed, None
            if failed is not None and time.monotonic() - failed[1] < (
                    self.socket_timeout or 0.0):
                raise failed[0]
            if _ROUND.wait_until == float("inf"):
                self._establish(check_health)
                return
            making = self._making = concurrent.futures.Future()
            threading.Thread(target=self._make, args=(making, check_health), daemon=True,
                             name="stockade-state-connect").start()
        try:
            making.result(max(0.0, _ROUND.wait_until - time.monotonic()))
            # The wait took the caller's time: its answers are due by its end, not a
            # whole store's time after the first send.
            _ROUND.answer_by = _ROUND.caller_until
        except TimeoutError:
            if making.done():
                self._failed = None  # seen here
                raise
            raise ConnectionPending("no connection yet (still being made, for the next "
                                    "request)") from None
        except BaseException:
            self._failed = None  # seen here
            raise

    def _make(self, making: concurrent.futures.Future[None], check_health: bool) -> None:
        drops = self._drops
        try:
            self._establish(check_health)
            if self._drops != drops:  # closed meanwhile: not kept
                raise redis.ConnectionError("disconnected while connecting")
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            self.disconnect()  # a handshake cut short leaves no usable connection
            self._failed = exc, time.monotonic()
            making.set_exception(exc)
        else:
            making.set_result(None)

    def _establish(self, check_health: bool) -> None:
        """redis-py's own connect and handshake, on this thread."""
        connect = getattr(super(), "connect_check_health", None)
        if connect is None:  # redis-py 5
            super().connect()  # type: ignore[misc]
        else:
            connect(check_health)


class _BoundedConnection(_BoundsReplies, _Resolving):
    pass


class _BoundedSSLConnection(_BoundsReplies, redis.SSLConnection, _Resolving):
    pass


class _BoundedUnixConnection(_BoundsReplies, redis.UnixDomainSocketConnection):
    pass


_BOUNDED: dict[str, type[redis.Connection] | type[redis.UnixDomainSocketConnection]] = {
    "redis": _BoundedConnection, "rediss": _BoundedSSLConnection,
    "unix": _BoundedUnixConnection}

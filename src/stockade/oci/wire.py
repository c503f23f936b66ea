"""The sockets under `RegistryClient`: every connect, TLS handshake, read and write of an
exchange ends by the exchange's deadline, response headers included.

httpx's timeouts bound each socket operation, not the exchange: a registry sending one
header byte every 20 s, inside the 30 s read timeout, held a pull for ever. httpcore takes
a network backend, which is where the deadline is kept here: each operation's timeout is
cut to the time left, so a socket blocked at the deadline times out then. httpx does not
pass a backend through, so `transport` gives its transport a pool made with one. Name
resolution takes no timeout at all: it is asked in a thread of its own and waited for no
longer than the connect's time (a resolver that did not answer held a pull for as long
as its retries took). Imported by `registry` only, lazily, as httpx is.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["ExchangeClock", "transport"]


class ExchangeClock:
    """The monotonic time by which the current exchange must end (`math.inf`: none)."""

    def __init__(self) -> None:
        self.until = math.inf

    def cut(self, timeout: float | None, late: type[httpcore.TimeoutException]) -> float | None:
        """`timeout` (seconds; None: none) cut to the time left. Raises `late` (which httpx
        maps to its own timeout) when none is left."""
        if self.until == math.inf:
            return timeout
        left = self.until - time.monotonic()
        if left <= 0:
            raise late("the exchange's deadline has passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, clock: ExchangeClock) -> None:
        self._inner, self._clock = inner, clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clock.cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clock.cut(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname,
                                             self._clock.cut(timeout, httpcore.ConnectTimeout)),
                       self._clock)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, clock: ExchangeClock) -> None:
        self._inner, self._clock = httpcore.SyncBackend(), clock

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        failed: httpcore.ConnectError | None = None
        for address in _addresses(host, port, self._clock.cut(timeout,
                                                              httpcore.ConnectTimeout)):
            try:  # each address in turn, as socket.create_connection tries them
                stream = self._inner.connect_tcp(
                    address, port, self._clock.cut(timeout, httpcore.ConnectTimeout),
                    local_address, socket_options)
            except httpcore.ConnectError as exc:
                failed = exc
                continue
            return _Stream(stream, self._clock)
        raise failed or httpcore.ConnectError(f"{host}: no address")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None,
                            ) -> httpcore.NetworkStream:
        timeout = self._clock.cut(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options),
                       self._clock)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


MAX_LOOKUPS = 16
_LOOKUPS = threading.BoundedSemaphore(MAX_LOOKUPS)


def _addresses(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of `host` (itself when it is one), asked of the resolver in a
    daemon thread and waited for at most `timeout` seconds. Raises httpcore's
    ConnectTimeout past it, ConnectError when the name does not resolve."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    answer: list[Any] = []
    answered = threading.Event()
    # Each lookup a resolver never answers holds its thread: at most this many at once.
    if not _LOOKUPS.acquire(blocking=False):
        raise httpcore.ConnectError(f"{host}: {MAX_LOOKUPS} name lookups are pending already")

    def ask() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            answer.append(exc)
        finally:
            _LOOKUPS.release()
            answered.set()

    try:
        threading.Thread(target=ask, name="stockade-resolve", daemon=True).start()
    except RuntimeError:  # no thread
        _LOOKUPS.release()
        raise
    if not answered.wait(timeout):
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g} s")
    if not answer or isinstance(answer[0], Exception):
        raise httpcore.ConnectError(f"{host}: {answer[0] if answer else 'no answer'}")
    return list(dict.fromkeys(str(info[4][0]) for info in answer[0]))


def transport(clock: ExchangeClock) -> httpx.HTTPTransport:
    """httpx's transport as `httpx.Client(trust_env=False)` makes it (no proxies or
    certificate paths from the environment, httpx's default limits), its sockets kept to
    `clock`."""
    context = httpx.create_ssl_context(trust_env=False)  # loaded once, used by the pool
    made = httpx.HTTPTransport(verify=context, trust_env=False)
    made._pool = httpcore.ConnectionPool(  # the one attribute httpx offers no parameter for
        ssl_context=context, max_connections=100, max_keepalive_connections=20,
        keepalive_expiry=5.0, network_backend=_Backend(clock))
    return made

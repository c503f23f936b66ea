"""The `requests` session the OTLP/HTTP exporters send through, bounded against a hostile
or broken collector: at most `max_body` bytes of a reply are read, a redirect is a
failed export (never followed), and one deadline bounds a request from connect to the
last byte (a collector trickling a byte every half second never trips a per-read timeout).

Imported by `sdksink` only when it builds an HTTP exporter (`requests` and `urllib3` come
with the SDK's exporter), so `stockade run` without an endpoint never loads them.
"""

from __future__ import annotations

import functools
import socket
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connectionpool import HTTPConnectionPool

__all__ = ["BoundedSession", "RefusedReply", "ExportDeadlineExceeded"]


class RefusedReply(requests.exceptions.RequestException):
    """A reply the exporter must count as a failed export. Not a connection error, so the
    SDK's client does not retry it."""


class ExportDeadlineExceeded(RefusedReply):
    """The request outlived its deadline; its connection was cut."""


class _Deadline:
    """Cuts the connections a request uses once `seconds` have passed: a shutdown socket
    wakes a read blocked in any phase (connect, TLS handshake, headers, body)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, connection: Any) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            cut = self.expired
        if cut:
            _cut(connection)

    def finish(self) -> bool:
        """Stop watching (before the connection goes back to the pool, where another
        request may take it); True if the deadline was met."""
        with self._lock:
            self._done = True
            self._connections.clear()
            met = not self.expired
        self._timer.cancel()
        return met

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)


_current = threading.local()  # the calling thread's `_Deadline`, while it sends


def _cut(connection: Any) -> None:
    """Shut the connection's socket down under whatever wraps it (TLS, a TLS tunnel)."""
    sock = getattr(connection, "sock", None)
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    if sock is not None:
        try:
            # The plain socket's shutdown: SSLSocket's own would drop its TLS state under
            # the thread reading it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


@functools.cache
def _watched_pool(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """`pool_class` whose connections report to the sending thread's deadline."""
    base: Any = pool_class.ConnectionCls

    class WatchedConnection(base):  # type: ignore[misc]
        def connect(self) -> None:
            deadline: _Deadline | None = getattr(_current, "deadline", None)
            if deadline is not None:
                deadline.watch(self)  # the socket exists before the TLS handshake
            super().connect()
            if deadline is not None and deadline.expired:
                _cut(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            deadline: _Deadline | None = getattr(_current, "deadline", None)
            if deadline is not None:
                deadline.watch(self)  # a pooled connection is not connected again
            super().request(*args, **kwargs)

    return type(f"Watched{pool_class.__name__}", (pool_class,),
                {"ConnectionCls": WatchedConnection, "_stockade_watched": True})


def _watch(manager: PoolManager) -> None:
    manager.pool_classes_by_scheme = {
        scheme: pool if getattr(pool, "_stockade_watched", False) else _watched_pool(pool)
        for scheme, pool in manager.pool_classes_by_scheme.items()}


class _WatchedAdapter(HTTPAdapter):
    """Pools (proxies' included) of connections a deadline can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch(self.poolmanager)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        _watch(manager)
        return manager


class BoundedSession(requests.Session):
    """Sends each request under one deadline (its `timeout`, else `deadline`), streams the
    reply and keeps at most `max_body` bytes of its body, closing the connection on
    the rest; a 3xx raises `RefusedReply`. Keeps no cookies (a collector could grow the jar
    with every reply)."""

    def __init__(self, deadline: float, max_body: int) -> None:
        super().__init__()
        self.deadline = deadline
        self.max_body = max_body
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _WatchedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Never a redirect: not followed, and its body not read whole to release it.
        return None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["stream"] = True
        kwargs["allow_redirects"] = False
        timeout = kwargs.get("timeout")
        seconds = float(timeout) if isinstance(timeout, (int, float)) else self.deadline
        deadline = _Deadline(seconds)
        _current.deadline = deadline
        try:
            response = super().send(request, **kwargs)
            try:
                if response.is_redirect or 300 <= response.status_code < 400:
                    raise RefusedReply(f"status code {response.status_code} redirect, not "
                                       f"followed", response=response)
                body = response.raw.read(self.max_body + 1, decode_content=True)
                if not deadline.finish():  # a body without a length ends at the cut
                    raise _overdue(seconds)
            except BaseException:
                response.raw.close()
                raise
        except RefusedReply:
            raise
        except Exception as error:
            if deadline.finish():
                raise
            raise _overdue(seconds) from error
        finally:
            _current.deadline = None
            deadline.finish()
        if len(body) > self.max_body:
            response.raw.close()  # the rest is never read: drop it with the connection
        response._content = body[:self.max_body]
        response._content_consumed = True
        response.close()  # a body read whole leaves its connection to the pool
        return response


def _overdue(seconds: float) -> ExportDeadlineExceeded:
    return ExportDeadlineExceeded(
        f"export deadline of {seconds:.1f} s passed, the collector answered too slowly")

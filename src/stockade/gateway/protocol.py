"""`guarded_protocol`: uvicorn's httptools protocol with the limits it lacks on request heads.

uvicorn times out idle keep-alive connections but has no timeout for reading a request's
head and no limit on its size: a client sending one header byte every few seconds keeps
a connection (and a file descriptor) forever, and one streaming headers fills memory
(httptools buffers them all). The subclass adds both:

- the head (request line and headers) must be complete within `header_timeout` seconds
  of the connection being made or of its first byte; otherwise 408 and close (a
  connection that sent nothing is closed silently);
- the head may be at most `max_header_size` bytes; otherwise 431 and close;
- one peer address holds at most `max_connections_per_ip` connections on the worker
  (`connlimit.py`); one more is answered 503 and closed when it is accepted.

Bodies are the application's: `BodyLayer` reads them with a deadline and a minimum rate.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .connlimit import REFUSAL, PeerConnections

__all__ = ["guarded_protocol", "GuardedProtocol"]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a head timeout and a head size limit (class attributes,
    set by `guarded_protocol`)."""

    header_timeout = 10.0
    max_header_size = 64 * 1024
    per_ip: PeerConnections | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal = 0
        self._peer: str | None = None  # counted in `per_ip` until the connection ends

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        per_ip = self.per_ip
        if per_ip is not None:
            peer = self.client[0] if self.client else ""
            if not per_ip.open(peer):
                transport.write(REFUSAL)
                transport.close()
                return
            self._peer = peer
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._peer is not None and self.per_ip is not None:
            self.per_ip.close(self._peer)
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still inside a head after this chunk: the chunk was all head bytes.
        if self._in_head and self._head_bytes > self.max_header_size \
                and not self.transport.is_closing():
            self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:
            self._begin_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the previous request is answered: close
            # after that answer instead of writing into it.
            self.cycle.keep_alive = False
        elif self._head_bytes:
            self._refuse(408)
        else:
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Answer `status` with an empty body and close the connection."""
        self._in_head = False
        self._cancel_head_timer()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                             % (status, _REASONS[status]))
        self.transport.close()


def guarded_protocol(header_timeout: float, max_header_size: int,
                     per_ip: PeerConnections | None = None) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class with these limits (seconds, bytes, connections per peer
    address), for uvicorn's `http` setting."""
    return type("GuardedProtocol", (GuardedProtocol,), {
        "header_timeout": header_timeout, "max_header_size": max_header_size,
        "per_ip": per_ip})

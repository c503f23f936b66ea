"""`guarded_protocol`: uvicorn's httptools protocol with the limits it lacks on request heads,
handing each request to the gateway's handler directly.

uvicorn times out idle keep-alive connections but has no timeout for reading a request's
head and no limit on its size: a client sending one header byte every few seconds keeps
a connection (and a file descriptor) forever, and one streaming headers fills memory
(httptools buffers them all). The subclass adds both:

- the head (request line and headers) must be complete within `header_timeout` seconds
  of the connection being made or of its first byte; otherwise 408 and close (a
  connection that sent nothing is closed silently);
- the heads a worker holds are bounded together and per client address by a
  `RequestBudget` (`header_buffer`): a head left incomplete after a read is charged
  what was fed of it (all of the read when it began behind a whole request) and
  `LINE_COST` a header line; a whole one its size and lines while its body comes, and,
  never cut off, while it waits in the pipeline (with the body bytes it brought). Past
  the budget the connection is answered 503 and closed, or, for a client within its
  fair share, the heads still arriving or awaiting their bodies of the client holding
  the most are (requestbudget.py). A head without a body arriving whole in one read
  costs nothing;
- the head may be at most `max_header_size` bytes and `MAX_HEADER_FIELDS` header lines,
  counted as httptools parses them and fed to it no further than the limit (a head
  arriving whole in one read was never seen incomplete); otherwise 431 and close. An
  HTTP/1.1 head without `Host`, or with two, is 400 (RFC 9112 3.2), and so is a target
  not in origin form (`http://host/path` names a host besides Host: the gateway is an
  origin server); a `Transfer-Encoding` other than `chunked` alone is 501, 400 in
  HTTP/1.0 (`_check_coding`). What follows a whole request counts toward the next head
  from the request's end, blank lines included, while that request is still answered.
  The rest of the body of a request answered before it ended is dropped under the
  head's limits, and past them the connection closes with no second answer. The
  trailers after a chunked body have the same limits (httptools keeps a field line
  whole until it ends) and are never kept: they come after the head's checks;
- a chunked body's bytes that are not its data (size lines and their extensions, line
  ends, trailers: llhttp reports none of them) may be `FRAMING_PER_BYTE` per byte of its
  data beyond twice `max_header_size`, and its chunks `MAX_CHUNKS` and one per
  `CHUNK_DATA` bytes of data; otherwise 400 and close (`_feed_framed`, `on_chunk_header`);
- a head refused behind pipelined requests still owed an answer, and the client's
  half-close, let those answers go out first, in order, the last closing the connection;
- the warnings uvicorn logs for what a client sends (a malformed request) are written at
  most once per `CLIENT_WARNING_INTERVAL` per worker, with a count of those left out
  (`ClientWarnings`): a client cannot fill the log at request rate;
- a request asking to upgrade is answered over HTTP and the requests pipelined after it
  are parsed on (uvicorn dropped them, and the client waited for the idle timeout);
- at most `MAX_PIPELINED` requests wait behind the one answered, their heads together
  within `QUEUED_HEADS` heads' bytes and `QUEUED_LINES` header lines a request, and no
  input is read while any waits (a queued request's body would grow past its limits);
  past either bound the next head is refused as above. Input after a refusal is read and dropped
  (a close with unread input would reset the answers owed) up to `IGNORED_MAX`, then
  no longer read. The answers' bytes must keep leaving at `send_min_rate`, or the
  connection is aborted (`_sending`), and past `response_buffer` bytes held unsent by
  all connections together, connections are reset until the rest fits, slow and
  lasting ones first (`sendbudget.py` gives the order); a request is not begun while
  its connection's last answer waits above the transport's high-water mark (one unsent
  answer a connection);
- one peer address holds at most `max_connections_per_ip` connections on the server
  (`connlimit.py`), and a worker at most `max_connections` (its descriptor limit less a
  reserve for modules, files and logs); one more is answered 503 and closed when it is
  accepted, so many addresses together cannot take the worker's last descriptor.

Bodies are the application's: the `Pipeline` (layers.py) reads them with a deadline and
a minimum rate.

A request goes to the app's `answer` as a `Request` built from the parsed head, not
through an ASGI scope: uvicorn's cycle (`Exchange`, a `RequestResponseCycle`) still
carries its body, flow control, disconnection and fallback `send`, but the scope
dictionary, its copy of the app state and the conversion back into a `Request` are
not made on every request. The app stays an ASGI application for any other server.

These deadlines and uvicorn's keep-alive timeout are times kept on each connection and
checked by one sweep per server every eighth of the shorter timeout (0.05-0.5 s), so a
deadline is acted on that much late at most: arming and cancelling a timer handle per
request cost more than the sweep.

`write_response` sends a whole response in one socket write (uvicorn's ASGI `send` writes
the head and the body apart: two system calls, each waking the client), with the checks
and bookkeeping uvicorn's `send` does. The responses finished in one turn of the event
loop are written together at its end (`WriteBatch`): on loopback each write wakes the
client and the wake-up costs the writer more than the rest of the write, so a server
answering many connections at once wakes each client once per turn, not once per
response. A response waits for no more than the requests that were ready beside it.
Whatever else writes to or closes a connection (a refusal, a closing response, the
client's half-close, the graceful shutdown) sends the batch first, so a connection's
bytes keep their order and none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
import math
import socket
import struct
import sys
import termios
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from .connlimit import IPV6_PREFIX, REFUSAL, PeerConnections, peer_key
from .messages import Request
from .problem import Unavailable
from .requestbudget import RETRY_AFTER, SLOW, Hold, RequestBudget
from .response import Response, framing, header_lines
from .sendbudget import FIRST_LOOK, LARGE, Holding, Pace, SendBudget

__all__ = ["guarded_protocol", "GuardedProtocol", "write_response", "WriteBatch", "Exchange",
           "Answer", "ClientWarnings", "CLIENT_WARNING_INTERVAL"]

# Bounds on the sweep's period (seconds): an eighth of the shortest timeout between them.
_SWEEP_MIN, _SWEEP_MAX = 0.05, 0.5
_REASONS = {400: b"Bad Request", 408: b"Request Timeout",
            431: b"Request Header Fields Too Large", 501: b"Not Implemented",
            503: b"Service Unavailable", 505: b"HTTP Version Not Supported"}
_RETRY_AFTER = b"retry-after: %d\r\n" % RETRY_AFTER  # a head budget's 503
_VERSIONS = ("1.1", "1.0")  # those served (RFC 9110 15.6.6: 505 for the others)
# Header lines a head may have (Apache's LimitRequestFields is 100): each one costs a
# tuple and a CGI variable on every request.
MAX_HEADER_FIELDS = 256
# Bytes of the worker a header line holds beyond its own (a tuple of two bytes objects),
# charged to the head budget with it: 255 one-byte lines cost ~100 B each for 4 sent.
LINE_COST = 100
# Requests parsed ahead of their answers on one connection (pipelined). One read of tiny
# pipelined heads held ~7,000 queued requests, and each answer let one more read in: a
# client that never read its answers grew a worker by 1.3 GB in 15 s. Past this many in
# what it has sent before its answers, the connection closes after answering them: a
# client sending more at once is cut off even if it reads (none of the usual ones does).
MAX_PIPELINED = 100
# The requests queued behind an answer may hold together as many bytes as this many heads
# at their limit (`max_header_size` each: four are what one read brings, 256 KiB), and
# `QUEUED_LINES` header lines a request at `MAX_PIPELINED`'s depth. A header line is a
# tuple of two bytes objects, ~100 B of the worker for 4 bytes sent: 99 heads of 255
# one-byte lines held ~1 MB for 104 KB sent (found by review); at 16 lines a request
# (what proxies and clients send: ten lines a request cut their pipelines short) it is
# ~160 KB at most.
QUEUED_HEADS = 4
QUEUED_LINES = 16
# A chunked body may have this many chunks, and one more per CHUNK_DATA bytes of its data:
# each costs the event loop three Python callbacks, and `max_body` counts data only (1
# MiB in 1-byte chunks cost 0.9 s of a worker's CPU, found by review). A client writing a
# line per chunk is never near it; a ratio of 64 refused one sending 20-byte lines.
MAX_CHUNKS, CHUNK_DATA = 4096, 8
# A chunked body's bytes that are not its data (size lines and their extensions, line
# ends, trailers) may be FRAMING_PER_BYTE per byte of its data, beyond twice the head's
# limit: llhttp skips extensions without storing them, but parsing them costs the loop
# CPU, and 3.6 GB of one endless extension came in 5 s (found by review). A client
# naming each chunk, or sending 8-byte chunks with 8-digit sizes, is well inside it.
FRAMING_PER_BYTE = 2
# Input still read, and dropped, once none is taken (after a refused head or an upgrade)
# while answers are owed: a close with unread input resets the connection, and the
# answers still in the kernel's send queue with it. Past this, reading stops.
IGNORED_MAX = 1024**2


_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close() resets, unsent dropped


# uvicorn warns once per malformed request: a client could fill the log at request rate.
CLIENT_WARNING_INTERVAL = 10.0  # seconds: at most one such line per worker per interval


class ClientWarnings:
    """uvicorn's protocol logger with the warnings clients cause at will (its protocol
    logs nothing else at that level) written at most once per `interval` seconds, the
    next one saying how many were left out. Errors (the app's failures) pass as they are."""

    def __init__(self, logger: logging.Logger, interval: float = CLIENT_WARNING_INTERVAL
                 ) -> None:
        self._logger = logger
        self._interval = interval
        self._next = -math.inf
        self._skipped = 0

    def warning(self, message: str, *args: object, **kwargs: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        self._next = now + self._interval
        if self._skipped:
            message = (f"{message} ({self._skipped} more client warnings in the last "
                       f"{self._interval:g} s not logged)")
            self._skipped = 0
        self._logger.warning(message, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is refused."""


# What answers a request: writes its response through `send` (`write_response`).
Answer = Callable[[Request, Callable[..., Awaitable[None]]], Awaitable[None]]


class _Signal:
    """What uvicorn's cycle asks of its `message_event` (`set`, `clear`, one `wait`er),
    made without `asyncio.Event`'s Python constructor: one is made per request, and all
    but those with a body that comes later are only ever set."""

    _set = False
    _waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        if not self._set:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True


def _answered() -> None:
    """An exchange's `on_response` once its answer has run (uvicorn's empty lambda)."""


class Exchange(RequestResponseCycle):
    """uvicorn's cycle of one request (its body, flow control, disconnection, `send`),
    answered from `request` instead of an ASGI scope; the scope holds only the method
    `send` reads. `writes` is its server's `WriteBatch`."""

    request: Request
    writes: WriteBatch
    sweep: _Sweep
    queued = (0, 0)  # (bytes, header lines) of its head, while it waits in the pipeline
    waiting = False  # in the pipeline
    charged = 0  # bytes of the head budget it holds while queued: its head, its body's

    async def send(self, message: Any) -> None:
        """uvicorn's (the answer's bytes written apart, once the transport drained: see
        `write_response`), with a large body told to the send budget."""
        await super().send(message)
        if message["type"] == "http.response.body" \
                and len(body := message.get("body", b"")) >= LARGE:
            self.sweep.answer_added(len(body))

    async def receive(self) -> Any:
        """uvicorn's, without reading on for a body already whole: that input is the
        requests after it (a queued request's body grew by a read at each one)."""
        if self.more_body or self.waiting_for_100_continue:
            return await super().receive()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        return {"type": "http.request", "body": body, "more_body": False}

    async def run(self, answer: Answer) -> None:
        """`answer` the request, with uvicorn's `run_asgi` guard: a failure before the
        response began is answered 500, one after it closes the connection. Not begun
        while the connection's last answer is still above the transport's high-water
        mark: a connection holds one unsent answer, not one more made and waiting."""
        try:
            if self.flow.write_paused:
                await self.flow.drain()
                if self.disconnected:
                    return
            await answer(self.request, self.send)
        except BaseException as exc:
            self.logger.error("Exception in the gateway's handler\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.writes.flush()
                self.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                self.logger.error("the gateway's handler returned without a response")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("the gateway's handler returned before its response ended")
                self.writes.flush()
                self.transport.close()
        finally:
            self.on_response = _answered
            self.request.answered()


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a head timeout and a head size limit (class attributes,
    set by `guarded_protocol`), handing requests to `answer`. Its deadlines, and
    uvicorn's keep-alive timeout, are times on the connection checked by one `_Sweep`
    per server, not a timer handle armed and cancelled per request."""

    answer: Answer
    client_warnings = ClientWarnings(logging.getLogger("uvicorn.error"))
    header_timeout = 10.0
    max_header_size = 64 * 1024
    send_timeout = 10.0  # seconds the unsent part of the answers may wait (see `_sending`)
    send_min_rate = 1024  # bytes a second a client reading its answers takes at least
    response_buffer = 64 * 1024**2  # bytes all connections may hold unsent (sendbudget.py)
    ipv6_prefix = IPV6_PREFIX  # an IPv6 client's network, counted as one client
    max_connections = 10_000
    per_ip: PeerConnections | None = None
    head_budget: RequestBudget | None = None  # the worker's, for heads (`guarded_protocol`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = self.client_warnings  # type: ignore[assignment]  # the same calls
        self._in_head = False
        self._head_bytes = 0
        self._head_deadline = math.inf  # loop time the head must be complete by
        self._idle_deadline = math.inf  # loop time an idle keep-alive connection closes
        self._cell: int | None = None  # counted in `per_ip` until the connection ends
        self._head_size = 0  # bytes of the head's fields parsed so far
        self._head_fields = 0
        self._hosts = 0
        self._framed = False  # the head has Content-Length or Transfer-Encoding
        self._refused_head = 0  # the status a parser callback refused the head with
        self._phases = 0  # heads and trailers begun or ended on this connection
        self._chunks = self._body_bytes = 0  # of the request being parsed
        self._trailing = False  # after a chunk's size line, before its data or its end
        self._trailer_bytes = 0
        self._chunked = False  # inside a chunked body (after its head, before its end)
        self._framing = 0  # bytes of that body fed that were not its data
        self._charged = False  # the input being fed is counted in `_framing`
        self._queued_size = self._queued_fields = 0  # of the heads in `pipeline`
        # The head budget's charges: the head or trailers being read (bytes charged to
        # `_head_hold` so far), and the head of the request whose body comes; and, never
        # cut off, the requests queued, their heads and the bytes of their bodies read
        # with them (`Exchange.charged`).
        self._head_hold: Hold | None = None
        self._parsed_hold: Hold | None = None
        self._head_charged = 0
        self._awaiting_body = 0  # `_head_hold`'s bytes of a whole head whose body comes
        self._head_floor = 0  # bytes of a head begun behind a whole request in one read
        self._began = False  # a head began in the input being fed, and is not whole yet
        self._ignored = 0  # bytes read and dropped while `_ignoring`
        self._answering: Exchange | None = None  # the request answered last or now
        self._send_deadline = math.inf  # loop time the unsent answers must be gone by
        self._unsent = 0  # bytes unsent at the last sweep (the transport's and the kernel's)
        self._pace: Pace | None = None  # how fast those went of late, while there are any
        self._idle_unsent = math.inf  # bytes unsent when the keep-alive time was last up
        self._sweep: _Sweep | None = None
        self._ignoring = False  # input after a refused pipelined head or a half-close
        self._discarding = False  # parsing the rest of a body whose request was answered
        self._writes = WriteBatch.of(self.server_state, self.loop)
        self._context = contextvars.copy_context()  # each answer runs in a copy of it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(REFUSAL)
            transport.close()
            return
        per_ip = self.per_ip
        if per_ip is not None:
            peer = self.client[0] if self.client else ""
            cell = per_ip.open(peer)
            if cell is None:
                transport.write(REFUSAL)
                transport.close()
                return
            self._cell = cell
        budget = self.head_budget
        if budget is not None:
            peer = self.client[0] if self.client else ""
            self._head_hold, self._parsed_hold = budget.hold(peer), budget.hold(peer)
        self._sweep = _Sweep.watch(self)
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline = self._idle_deadline = math.inf
        if self._cell is not None and self.per_ip is not None:
            self.per_ip.close(self._cell)  # once: forgotten here
            self._cell = None
        # Requests queued behind the one answered will never start: freed now, not when a
        # full collection finds the queue and this protocol holding each other.
        self.pipeline.clear()
        self._queued_size = self._queued_fields = 0
        self._head_charged = self._awaiting_body = 0
        for hold in (self._head_hold, self._parsed_hold):
            if hold is not None:
                hold.release()
        answering = self._answering
        if answering is not None and answering is not self.cycle \
                and not answering.response_complete:
            # uvicorn tells only the last request parsed: the one answered, waiting to
            # write, then wrote into the closed transport (a traceback per connection).
            answering.disconnected = True
            answering.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ignoring:  # the connection closes after its last answer
            self._ignored += len(data)
            if self._ignored > IGNORED_MAX:
                self.flow.pause_reading()
            return
        size, self._began = len(data), False
        if self._idle_deadline != math.inf:
            # Bytes after a response start the next head's clock, whatever they are: a
            # blank line starts no request (no `on_message_begin`) yet ends keep-alive.
            if self._in_head:  # counted since the last request ended (`on_message_complete`)
                self._time_head()
            else:
                self._begin_head()
                # Or they are the rest of the answered request's body
                # (`_discarded_body_refused`).
                self._discarding = self.cycle is not None and self.cycle.more_body
        # A head, and the trailers after a chunked body's last chunk, are fed no further
        # than their limit: bytes no callback reports (blank lines, padding, a field line
        # httptools keeps whole until it ends) count too. What follows one that completed
        # (a body, the next pipelined request) is fed on, under a limit of its own.
        counted = self._counted()
        while counted is not None and len(data) > (room := self.max_header_size + 1 - counted):
            phases = self._phases
            self._count(room)
            if not self._feed_framed(data[:room]):
                return
            data = data[room:]
            counted = self._counted()
            if self._phases == phases and counted is not None:
                self._refuse(431)  # the same head or trailers, past the limit
                return
        if counted is not None:
            self._count(len(data))
        if not self._feed_framed(data):
            return
        # Still inside the same part after this chunk: the chunk was all its bytes.
        counted = self._counted()
        if counted is not None and counted > self.max_header_size:
            self._refuse(431)
        elif counted is not None:  # held until more comes: charged (one fed whole never is)
            # A head begun in this input behind a whole request: the input was counted
            # toward the request before it, and nothing saw where that ended, so the
            # head holds at most all of it (uncharged, 200 heads behind a GET each held
            # 15 KiB past a 32 KiB allowance: found by review).
            if self._began and self._in_head:  # what of this read no count saw
                self._head_floor = max(0, size - counted)  # (what comes next is on top)
            held = counted + self._head_floor
            if held:
                self._charge_head(held + LINE_COST * self._head_fields)

    def _charge_head(self, held: int) -> None:
        """The head (or trailers) being read holds `held` bytes of the worker: what is
        not charged yet goes to the head budget; past it, 503 and close."""
        hold = self._head_hold
        if hold is None or held <= self._head_charged:
            return
        try:
            hold.charge(held - self._head_charged, self._cut_head)
        except Unavailable as refused:
            self._head_refused(refused)
            self._refuse(503)
            return
        self._head_charged = held

    def _head_refused(self, refused: Unavailable) -> None:
        """Say why the head budget refused this connection's head (at most once per
        `CLIENT_WARNING_INTERVAL` for the worker: `ClientWarnings`)."""
        self.client_warnings.warning("%s: request head refused: %s",
                                     self.client[0] if self.client else "a client",
                                     refused.message)

    def _uncharge(self) -> None:
        """The head or trailers being read are over: their charge is given back."""
        if self._head_charged:
            charged, self._head_charged = self._head_charged, 0
            self._head_hold.release(charged)  # type: ignore[union-attr]  # it has one

    def _cut_head(self) -> None:
        """The head budget cut this head off to make room (it came slowly from a client
        holding more than its share): 503 and close, its charge given back already."""
        self._head_charged = self._awaiting_body = 0
        self.client_warnings.warning("%s: request head cut off: the worker holds too many "
                                     "heads arriving, and this client more than its share",
                                     self.client[0] if self.client else "a client")
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            # Answered before its body ended: a 503 now would be a second answer, which a
            # proxy reads as its next request's (found by the fix's review).
            self._in_head = False
            self._head_deadline = math.inf
            self._writes.flush()
            self.transport.close()
            return
        self._refuse(503)

    def _feed_framed(self, data: bytes) -> bool:
        """`_feed` `data`, what it holds of a chunked body's framing counted: input fed
        inside such a body is charged whole and its data (`on_body`) taken back, so size
        lines, extensions, line ends and trailers are what is left, exactly but for the
        read in which the body begins (at most a head's limit) or ends. Past
        `FRAMING_PER_BYTE` per byte of data and twice `max_header_size`, 400 and close.
        False when no more input is to be fed (the connection closes, or ignores it)."""
        charged = self._charged = self._chunked
        if charged:
            self._framing += len(data)
        self._feed(data)
        self._charged = False
        if self.transport.is_closing() or self._ignoring:
            return False
        if self._chunked and self._framing > 2 * self.max_header_size \
                + FRAMING_PER_BYTE * self._body_bytes:
            self._refuse(400)
            return False
        return True

    def _feed(self, data: bytes) -> None:
        """uvicorn's `data_received`, except for a request asking to upgrade: no protocol
        is switched to (the worker serves HTTP only, RFC 9110 7.8). The request is answered
        over HTTP with `connection: close` and what followed it is ignored: a proxy in front
        that tunnels once it sees `Upgrade` would pass those bytes on unchecked, and they
        would be served as requests. (uvicorn dropped them too, but kept the connection
        open, so a client waited for the idle timeout; and warned twice per such request.)
        One with a body, and CONNECT, are refused at their head (`on_headers_complete`)."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade:
            self._ignoring = True  # the connection closes after the request's answer

    def _should_upgrade(self) -> bool:
        """Never: no request switches protocols here (uvicorn's `on_body` and
        `on_message_complete` would otherwise skip one asking for a WebSocket)."""
        return False

    def _counted(self) -> int | None:
        """Bytes fed so far of the head or the trailers being parsed; None: neither."""
        if self._in_head:
            return self._head_bytes
        return self._trailer_bytes if self._trailing else None

    def _count(self, size: int) -> None:
        if self._in_head:
            self._head_bytes += size
        else:
            self._trailer_bytes += size

    def on_chunk_header(self) -> None:
        # What follows a chunk's size line is its data, or (the last chunk's) trailers.
        self._trailing, self._trailer_bytes = True, 0
        self._phases += 1
        self._chunks += 1
        if self._chunks > MAX_CHUNKS + self._body_bytes // CHUNK_DATA:
            raise _HeadRefused("a chunked body in too many small chunks")  # 400

    def on_body(self, body: bytes) -> None:
        self._end_trailers()  # it was a chunk's data
        self._body_bytes += len(body)
        if self._charged:
            self._framing -= len(body)  # data: charged with the input, not framing
        cycle: Exchange | None = self.cycle  # type: ignore[assignment]  # only ever one
        if cycle is not None and cycle.waiting:  # kept until its turn: no body budget yet
            self._hold_parsed(cycle, len(body))
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._end_trailers()

    def _end_trailers(self) -> None:
        if self._trailing:
            self._trailing = False
            self._phases += 1
            self._uncharge()

    def on_message_begin(self) -> None:
        # uvicorn's makes an ASGI scope here; the request is made once its head is whole.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._framed = self._chunked = False
        self._discarding = False
        self._began = True  # in the input being fed (`data_received`)
        self._chunks = self._body_bytes = self._framing = 0
        # What an answered request's late trailers counted is not this head's.
        self._head_size = self._head_fields = self._hosts = 0
        if not self._in_head:
            self._begin_head()
        else:  # counted since the last request ended: its time runs from its first byte
            self._time_head()

    def on_message_complete(self) -> None:
        """uvicorn's; what comes next counts toward the next head from here, not once the
        answer is out: blank lines sent while a request was answered (they start no
        request) were read and counted nowhere, 247 MB in a 5 s answer (found by review).
        Its time starts with its first byte after the answer (`data_received`), or with
        the request's own (`on_message_begin`)."""
        self._end_trailers()
        self._chunked = self._charged = False  # what follows in this input is no body's
        if self._awaiting_body:  # its body ended: its head is let go
            awaited, self._awaiting_body = self._awaiting_body, 0
            self._head_hold.release(awaited)  # type: ignore[union-attr]  # it has one
        super().on_message_complete()
        # The rest of an answered request's body ended (`_discarding`): it counted toward
        # the next head, which now starts (its bytes stayed charged as a head, found by
        # review, and an 8 KB head after a 60 KB one dropped was 431).
        if not self._in_head or self._discarding:
            self._discarding = False
            self._begin_head(timed=False)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._count_head(len(name) + len(value) + 4)
        if self._trailing or not self._in_head:
            # A trailer, after a chunked body: counted, never kept. It arrives once the
            # head was checked, so it would pose as a header of the request (and the list
            # is the request's, read by the handler while the body comes).
            return
        name = name.lower()
        if name == b"host":
            self._hosts += 1
            if self._hosts > 1:
                self._refused_head = 400
                raise _HeadRefused("more than one Host header")
        elif name == b"content-type" and any(
                known == b"content-type" for known, _ in self.headers):
            # The function read the last, where a proxy's filter in front may read the
            # first (RFC 9110 5.3: a field of one value).
            self._refused_head = 400
            raise _HeadRefused("more than one Content-Type header")
        elif name == b"content-length" or name == b"transfer-encoding":
            self._framed = True  # a body may follow (`Request.read_body` reads it)
            if name == b"transfer-encoding":
                self._check_coding(value)
        value = value.rstrip(b" \t")  # as uvicorn: trailing whitespace is no part of it
        # Ignored from HTTP/1.0 (RFC 9110 10.1.1), which no 1xx may reach (15.2): a 1.0
        # proxy took `100 Continue` for the answer, and the answer for its body.
        if name == b"expect" and value.lower() == b"100-continue" \
                and self.parser.get_http_version() != "1.0":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _check_coding(self, value: bytes) -> None:
        """Refuse a `Transfer-Encoding` other than `chunked` alone (RFC 9112 6.1): httptools
        decodes the chunks of `gzip, chunked` and the body reached the function still
        gzipped, as if plain. HTTP/1.0 has no transfer codings (a proxy in front may frame
        the body otherwise): 400; chunked not last: the body has no length (6.3), 400;
        another coding before it (or a second header, if httptools let one by): 501.
        The connection is closed."""
        codings = [coding.strip() for coding in value.lower().split(b",")]
        if codings == [b"chunked"] and self.parser.get_http_version() != "1.0" \
                and not any(name == b"transfer-encoding" for name, _ in self.headers):
            return
        if self.parser.get_http_version() == "1.0" or codings[-1] != b"chunked":
            self._refused_head = 400
            raise _HeadRefused("a body of no length, or Transfer-Encoding in HTTP/1.0")
        self._refused_head = 501
        raise _HeadRefused("a transfer coding other than chunked")

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_header_size or self._head_fields > MAX_HEADER_FIELDS:
            self._refused_head = 431
            raise _HeadRefused("the request head is too large")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, also what a callback's `_HeadRefused`
        ends in: 431 for a head too large, 501 for a transfer coding, 505 for a version
        not served."""
        if self._refused_head in (431, 501, 503, 505):
            self._refuse(self._refused_head)
            return
        if self._discarded_body_refused() or self._close_after_answers():
            return
        self._writes.flush()
        super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version not in _VERSIONS:
            # HTTP/0.9's request line has neither headers nor framing (nothing a proxy in
            # front would frame alike), and HTTP/2 is not spoken over this connection.
            self._refused_head = 505
            raise _HeadRefused(f"HTTP/{version}")
        if not self._hosts and version == "1.1":
            self._refused_head = 400  # RFC 9112 3.2: an HTTP/1.1 request names its host
            raise _HeadRefused("no Host header")
        target = self.url
        if b"#" in target:
            # No part of a request target (RFC 9112 3.2): dropped here, while a proxy in
            # front may match a path that goes on past it.
            self._refused_head = 400
            raise _HeadRefused("a fragment in the request target")
        if target[:1] != b"/" and target != b"*":
            # Absolute form names a host besides Host, and the target's would win (RFC
            # 9112 3.2.2): the function reads Host's. Served as the origin form it names
            # when the two agree, it passed a proxy's rule for `/metrics` or a function's
            # route matching the target as sent (found by review): a gateway is an origin
            # server, sent origin-form targets by clients and by the proxies in front.
            self._refused_head = 400
            raise _HeadRefused("a request target in absolute or authority form")
        if parser.should_upgrade() and (self._framed or parser.get_method() == b"CONNECT"):
            # httptools ends an upgrade request at its head, whatever it declares: its body
            # would be parsed as the next request (smuggled past a proxy framing it by its
            # length); a CONNECT answered 2xx would open a tunnel the client then talks raw
            # bytes into. Neither is served.
            self._refused_head = 400
            raise _HeadRefused("an upgrade request with a body, or CONNECT")
        # A body in chunks: their framing is counted from here (`_feed_framed`). Any
        # Transfer-Encoding left is `chunked` alone (`_check_coding`).
        self._chunked = self._framed and any(
            name == b"transfer-encoding" for name, _ in self.headers)
        # Trailers, if any, are counted apart.
        size, fields = self._head_size, self._head_fields
        self._head_size = self._head_fields = self._hosts = 0
        self._in_head = self._began = False
        self._head_deadline = math.inf
        if self._head_charged:  # (inline: once a request)
            self._head_floor = 0
            self._uncharge()
        # What uvicorn's does (less the WebSocket upgrade: the worker serves none), into a
        # `Request` instead of a scope.
        method = parser.get_method().decode("ascii")
        url = httptools.parse_url(target)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            try:
                path = urllib.parse.unquote(path, errors="strict")
            except UnicodeDecodeError:
                # Replaced by U+FFFD, `/a/%FF` and `/a/%FE` were one path here, two to
                # a proxy in front.
                self._refused_head = 400
                raise _HeadRefused("percent-escapes in the path that are not UTF-8") from None
        cycle = Exchange(
            scope={"method": method},  # type: ignore[typeddict-item]  # what `send` reads
            transport=self.transport, flow=self.flow, logger=self.logger,
            access_logger=self.access_logger, access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=_Signal(),  # type: ignore[arg-type]  # what the cycle uses
            expect_100_continue=self.expect_100_continue,
            # An upgrade request closes the connection after its answer (see `_feed`).
            keep_alive=version != "1.0" and parser.should_keep_alive()
            and not parser.should_upgrade(),
            on_response=self.on_response_complete)
        cycle.writes = self._writes
        cycle.sweep = self._sweep  # type: ignore[assignment]  # set: the connection is kept
        cycle.request = Request(
            method, self.root_path + path, (url.query or b"").decode("latin-1"), self.headers,
            client=self.client, server=self.server, scheme=self.scheme or "http",
            http_version=version, raw_path=self.root_path.encode("ascii") + raw_path,
            receive=cycle.receive,
            body_read=not self._framed)  # neither length nor chunks: no body (RFC 9112 6.3)
        previous = self.cycle
        if previous is None or previous.response_complete:
            if self._framed:
                self._hold_head_for_body(size + LINE_COST * fields)
            self.cycle = cycle
            self._start(cycle)
        elif len(self.pipeline) >= MAX_PIPELINED \
                or self._queued_size + size > QUEUED_HEADS * self.max_header_size \
                or self._queued_fields + fields > QUEUED_LINES * MAX_PIPELINED:
            # Refused before it is kept: those queued are answered, the last closing the
            # connection, and the rest of the input is ignored (`send_400_response`).
            raise _HeadRefused(f"more than {MAX_PIPELINED} pipelined requests, or more "
                               f"than {QUEUED_HEADS} heads' bytes or "
                               f"{QUEUED_LINES * MAX_PIPELINED} header lines queued")
        else:  # pipelined: started when the previous response is complete
            self._hold_parsed(cycle, size + LINE_COST * fields)  # until its turn
            cycle.waiting = True
            self.cycle = cycle
            self.flow.pause_reading()
            cycle.queued = size, fields
            self._queued_size += size
            self._queued_fields += fields
            self.pipeline.appendleft((cycle, self.app))

    def _dequeued(self, cycle: Exchange) -> None:
        """`cycle` left the pipeline: its head no longer counts toward what is queued."""
        size, fields = cycle.queued
        self._queued_size -= size
        self._queued_fields -= fields
        cycle.waiting = False  # begun: what it brings is the body budget's from here
        if cycle.charged and self._parsed_hold is not None:
            self._parsed_hold.release(cycle.charged)
            cycle.charged = 0

    def _begin_queued(self, cycle: Exchange) -> bool:
        """`cycle`, out of the pipeline, is about to begin: with its body still coming,
        its head is held as a begun one's is (released at its turn, a body trickled
        behind a pipelined head held it uncharged: found by review). False, answered 503
        and the connection closed, when the head budget has no room for it."""
        size, fields = cycle.queued
        if not cycle.more_body or self._head_hold is None:
            return True
        try:
            self._head_hold.charge(size + LINE_COST * fields, self._cut_head)
        except Unavailable as refused:
            self._head_refused(refused)
            self._refuse(503)  # its answer: nothing was written for it
            return False
        self._awaiting_body += size + LINE_COST * fields
        return True

    def _hold_head_for_body(self, size: int) -> None:
        """A whole head of `size` bytes whose body is still to come: held until its body
        ends (`on_message_complete`), charged as a head still arriving
        (cut off to make room: a slow body behind it is no better than a slow head; held
        uncuttable, slow bodies kept every honest POST out, found by review). Raises
        `_HeadRefused` (503) past the budget."""
        hold = self._head_hold
        if hold is None:
            return
        try:
            hold.charge(size, self._cut_head)
        except Unavailable as refused:
            self._refused_head = 503
            raise _HeadRefused(refused.message) from None
        self._awaiting_body = size

    def _hold_parsed(self, cycle: Exchange, size: int) -> None:
        """Charge `size` bytes `cycle` holds to the head budget, never cut off (as a body
        read whole); past it, the head (or queued body) is refused 503 (`_HeadRefused`)."""
        hold = self._parsed_hold
        if hold is None or not size:
            return
        try:
            hold.charge(size, None)
        except Unavailable as refused:
            self._refused_head = 503
            raise _HeadRefused(refused.message) from None
        cycle.charged += size

    def _start(self, cycle: Exchange) -> None:
        self._answering = cycle
        # In a copy of the connection's context, not the current one: a pipelined request
        # is started at the end of the previous answer, and inherited what that one set.
        task = self.loop.create_task(cycle.run(self.answer), context=self._context.copy())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def shutdown(self) -> None:
        self._writes.flush()  # a finished response is sent before the connection closes
        super().shutdown()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        """The client's half-close. Requests that came whole and are still being answered
        (pipelined) are answered, the last closing the connection (one queued with its
        body unfinished is dropped); otherwise it closes now, after what was answered.
        An answer handed over before the half-close was seen keeps its keep-alive head:
        this close is what ends the connection after it. Seen only once no request
        waits (reading is paused meanwhile), so it comes behind the last one begun."""
        self._writes.flush()
        # As for a refused head: no more input comes. True: open for the answers.
        return True if self._close_after_answers() else None

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive timeout as a deadline for the sweep."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_deadline = math.inf
        if self.pipeline:  # a pipelined request waits: start it
            cycle, _ = self.pipeline.pop()
            self._dequeued(cycle)  # type: ignore[arg-type]  # only ever an Exchange
            if self._begin_queued(cycle):  # type: ignore[arg-type]
                self._start(cycle)  # type: ignore[arg-type]
        else:
            self._idle_deadline = self.loop.time() + self.timeout_keep_alive
            self._idle_unsent = math.inf
        # Input is read on only once no parsed request waits: what comes is the last
        # one's body, or the next request. (uvicorn read on after every answer, and a
        # queued request's body grew by a read each time, before its own limits: 29 MB
        # of a 1 MiB `max_body`.) A head begun meanwhile was not read on either: its
        # time starts again now (`_expire` leaves it alone while requests wait), or the
        # client lost it behind answers that took longer than `header_timeout`.
        if not self.pipeline:
            self.flow.resume_reading()
            if self._in_head and self._head_deadline != math.inf:
                self._head_deadline = self.loop.time() + self.header_timeout

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this on every chunk received and when the connection is lost.
        self._idle_deadline = math.inf

    def _begin_head(self, timed: bool = True) -> None:
        """Count what comes as the next head, from now; its deadline too when `timed`."""
        self._phases += 1
        self._in_head = True
        if self._head_charged:  # (inline: once a request)
            self._head_floor = 0
            self._uncharge()
        self._head_bytes = self._head_size = self._head_fields = self._hosts = 0
        self._refused_head = 0
        self._head_deadline = self.loop.time() + self.header_timeout if timed else math.inf

    def _time_head(self) -> None:
        """Start the deadline of the head being counted, unless it runs already."""
        if self._head_deadline == math.inf:
            self._head_deadline = self.loop.time() + self.header_timeout

    def _expire(self, now: float) -> Holding[GuardedProtocol] | None:
        """Called by the sweep: act on a deadline that has passed. What the connection
        holds unsent afterwards, for the send budget (None: nothing)."""
        held = self._sending(now)
        if held < 0:
            return None
        if now >= self._head_deadline and not self.pipeline:
            self._head_deadline = math.inf
            self._head_timed_out()
        elif now >= self._idle_deadline:
            if self._taking_its_answer(held):
                self._idle_deadline = now + self.timeout_keep_alive
            else:
                self._idle_deadline = math.inf
                if not self.transport.is_closing():
                    self._writes.flush()
                    self.transport.close()
        if not held:
            return None
        pace, unsent = self._pace, self._unsent
        if pace is None:
            lasting = slow = False
        else:
            lasting = pace.lasting(now, unsent, self.send_timeout)
            slow = pace.slow(now, unsent, SLOW * self.send_min_rate)
        return Holding(self, peer_key(self.client[0] if self.client else "", self.ipv6_prefix),
                       held, lasting, slow)

    def _taking_its_answer(self, held: int) -> bool:
        """Whether the client is still taking its last answer, at `send_min_rate` at least
        since the last look (the first look: at all), when its keep-alive time is up.
        That time ran from when the answer was handed over, so a download longer than
        `keep_alive_timeout` lost its connection after its last byte (uvicorn's too).
        A client that stopped reading is closed on as before."""
        unsent = self._unsent if held else _kernel_unsent(self.transport)
        previous, self._idle_unsent = self._idle_unsent, unsent
        return unsent > 0 and previous - unsent >= self.send_min_rate * self.timeout_keep_alive

    def _sending(self, now: float) -> int:
        """The answers' bytes must keep leaving as a body's must keep coming: those the
        transport holds unsent have `send_timeout`, each byte the client takes adds
        `1 / send_min_rate` s, never past `send_timeout` ahead; new bytes handed over
        (only once it had taken the last ones: the protocol pauses answering above the
        transport's high-water mark) start it again. A client that stops reading held
        every answer it asked for in the worker's memory (a close waits to send them):
        about twice `max_response` each, 256 connections an address. Past the deadline
        the connection is aborted, its unsent bytes dropped. Returns the bytes the
        transport holds, -1 when it was aborted."""
        transport = self.transport
        held = transport.get_write_buffer_size() if transport is not None else 0
        if not held:  # what the kernel still holds is no memory of this worker's
            self._send_deadline, self._unsent, self._pace = math.inf, 0, None
            return 0
        # The pace counts the kernel's queue too: it takes more from the transport only
        # once a third of its own (up to 4 MiB) has gone, so the transport's count stood
        # still for 13 s under a client reading 100 KiB/s, which was then cut off.
        unsent = held + _kernel_unsent(transport)
        previous, self._unsent = self._unsent, unsent
        if self._pace is None:
            self._pace = Pace(now, unsent)
        else:
            self._pace.update(now, unsent, unsent > previous)
        if unsent > previous:
            self._send_deadline = now + self.send_timeout
        elif unsent < previous:
            self._send_deadline = min(self._send_deadline
                                      + (previous - unsent) / self.send_min_rate,
                                      now + self.send_timeout)
        if now < self._send_deadline:
            return held
        self._abort("%s took its answers slower than %d bytes/s: connection aborted, "
                    "%d bytes unsent", self.send_min_rate, unsent)
        return -1

    def _abort(self, message: str, *args: object) -> None:
        """Reset the connection, its unsent bytes dropped (the kernel's too: a socket
        closed with bytes still queued goes on sending them to the client, at its pace),
        and say why (`message` with the client's address and `args`)."""
        self._send_deadline = self._head_deadline = self._idle_deadline = math.inf
        self.client_warnings.warning(
            message, self.client[0] if self.client else "a client", *args)
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    def _close_after_answers(self) -> bool:
        """No more input is taken (a refused head, or the client's half-close) while
        requests are still being answered (pipelined): they are answered, in order, the
        last with `connection: close`, and the rest of the input is ignored, instead of a
        refusal or a close ahead of their answers (which lost them). True when so."""
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and cycle.more_body:
            # The refused part is this request's own (its body or trailers): refused now
            # if it is being answered; if it waits behind others, it is dropped and the
            # one before it is the last answered.
            if not self.pipeline or self.pipeline[0][0] is not cycle:
                return False
            self._dequeued(self.pipeline.popleft()[0])  # type: ignore[arg-type]
            cycle = self.pipeline[0][0] if self.pipeline else self._answering
        if cycle is None or cycle.response_complete:
            return False  # nothing owed
        cycle.keep_alive = False
        self._in_head = False
        self._head_deadline = math.inf
        self._uncharge()
        self._ignoring = True
        return True

    def _discarded_body_refused(self) -> bool:
        """The rest of an answered request's body is parsed (and dropped) under the
        head's limits, its time and size: past them, or malformed, the connection closes
        with no second answer to that request (a 431 or a 408 after its 404). True
        when so."""
        if not self._discarding:
            return False
        self._in_head = False
        self._head_deadline = math.inf
        self._writes.flush()
        self.transport.close()
        return True

    def _head_timed_out(self) -> None:
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the previous request is answered: close
            # after that answer instead of writing into it.
            self.cycle.keep_alive = False
        elif self._head_bytes:
            self._refuse(408)
        else:
            self._writes.flush()
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Answer `status` with an empty body and close the connection."""
        if self._discarded_body_refused() or self._close_after_answers():
            return
        self._in_head = False
        self._head_deadline = math.inf
        self._uncharge()
        self._writes.flush()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n%sconnection: close\r\n\r\n"
                             % (status, _REASONS[status],
                                _RETRY_AFTER if status == 503 else b""))
        self.transport.close()


def _kernel_unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel holds not yet taken by the peer on `transport`'s socket
    (SIOCOUTQ), 0 when it cannot tell."""
    sock = transport.get_extra_info("socket")
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, ValueError):
        return 0
    return int.from_bytes(queued, sys.byteorder, signed=True)


class WriteBatch:
    """The whole responses finished during one turn of `loop`, written at its end in the
    order they were finished (see the module docstring). One per server, as the sweep."""

    __slots__ = ("loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[asyncio.BaseTransport, bytes]] = []

    @classmethod
    def of(cls, state: Any, loop: asyncio.AbstractEventLoop) -> WriteBatch:
        """The batch of the server `state` belongs to (uvicorn's `ServerState`)."""
        batch: WriteBatch | None = getattr(state, "_stockade_writes", None)
        if batch is None or batch.loop is not loop:
            batch = state._stockade_writes = cls(loop)
        return batch

    def add(self, transport: asyncio.BaseTransport, data: bytes) -> None:
        """Write `data` to `transport` at the end of this turn of the loop."""
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append((transport, data))

    def flush(self) -> None:
        """Write what is pending now (to connections still open). Safe to call any time."""
        pending, self.pending = self.pending, []
        for transport, data in pending:
            if not transport.is_closing():
                transport.write(data)  # type: ignore[attr-defined]


class _Sweep:
    """Checks every connection of one server for a passed deadline, every `interval`
    seconds while it has connections: a deadline is acted on at most `interval` late;
    then holds their unsent answers to the send `budget`. One per server (kept on
    uvicorn's `ServerState`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any],
                 interval: float, budget: SendBudget) -> None:
        self.loop = loop
        self.connections = connections
        self.interval = interval
        self.budget = budget
        self.armed = False
        self.due = False  # a pass is called soon: a large answer may have passed the budget

    @classmethod
    def watch(cls, protocol: GuardedProtocol) -> _Sweep:
        """The sweep of `protocol`'s server, made sure to run (armed on its first
        connection)."""
        state = protocol.server_state
        sweep: _Sweep | None = getattr(state, "_stockade_sweep", None)
        if sweep is None or sweep.loop is not protocol.loop:
            shortest = min(protocol.header_timeout, protocol.timeout_keep_alive)
            sweep = cls(protocol.loop, protocol.connections,
                        min(_SWEEP_MAX, max(_SWEEP_MIN, shortest / 8)),
                        SendBudget(protocol.response_buffer))
            state._stockade_sweep = sweep  # type: ignore[attr-defined]
        if not sweep.armed:
            sweep.armed = True
            sweep.loop.call_later(sweep.interval, sweep.run)
        return sweep

    def run(self) -> None:
        """One pass; re-armed while any connection is open."""
        self._pass()
        self.armed = bool(self.connections)
        if self.armed:
            self.loop.call_later(self.interval, self.run)

    def answer_added(self, size: int) -> None:
        """A large answer of `size` bytes was handed to a connection: a pass comes once
        its pace can be judged when it may have taken the total past the budget."""
        if self.budget.added_answer(size) and not self.due:
            self.due = True
            self.loop.call_later(FIRST_LOOK, self._due_pass)

    def _due_pass(self) -> None:
        self.due = False
        self._pass()

    def _pass(self) -> None:
        now = self.loop.time()
        holdings = []
        for connection in tuple(self.connections):
            if isinstance(connection, GuardedProtocol):
                holding = connection._expire(now)
                if holding is not None:
                    holdings.append(holding)
        for connection in self.budget.cuts(holdings):
            connection._abort("%s took its answers too slowly while the worker held more "
                              "than %d bytes of answers unsent: connection reset, %d bytes "
                              "unsent", self.budget.total, connection._unsent)


def guarded_protocol(answer: Answer, header_timeout: float, max_header_size: int,
                     per_ip: PeerConnections | None = None,
                     max_connections: int | None = None, send_timeout: float = 10.0,
                     send_min_rate: int = 1024, response_buffer: int = 64 * 1024**2,
                     ipv6_prefix: int = IPV6_PREFIX, header_buffer: int = 32 * 1024**2,
                     header_buffer_per_client: int = 4 * 1024**2) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class handing requests to `answer` (`GatewayApp.answer`) with
    these limits (seconds, bytes, connections per peer address, connections of this
    worker: None for its descriptor limit less a reserve; how long unsent answers may
    wait, how fast a client must take them, and how many bytes of them all connections
    may hold, an IPv6 client counted as its `/ipv6_prefix` network; how many bytes of
    heads all connections and one client's may hold), for uvicorn's `http` setting."""
    return type("GuardedProtocol", (GuardedProtocol,), {
        "answer": staticmethod(answer),
        "client_warnings": ClientWarnings(logging.getLogger("uvicorn.error")),
        "header_timeout": header_timeout, "max_header_size": max_header_size,
        "send_timeout": send_timeout, "send_min_rate": send_min_rate,
        "response_buffer": response_buffer, "ipv6_prefix": ipv6_prefix,
        "per_ip": per_ip,
        "head_budget": RequestBudget(header_buffer, header_buffer_per_client, ipv6_prefix,
                                     SLOW * send_min_rate, what="request heads",
                                     reason="header_buffer", paced=False),
        "max_connections": max_connections if max_connections is not None
        else descriptor_budget()})


# Descriptors a worker keeps beside its connections and its guests': modules, guests'
# output, logs, telemetry, the listening socket.
DESCRIPTOR_RESERVE = 512
# The part of its open-file limit a worker's in-process guests hold together
# (`hostcalls.fdroom`): unshared, eight runs of the default profile took 2,048 of 1,024,
# and connections were reset (found by review).
GUEST_SHARE = 4  # one in four


def guest_descriptors() -> int:
    """What a worker's in-process guests may hold together: `1 / GUEST_SHARE` of its
    open-file limit."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return soft // GUEST_SHARE


def descriptor_budget() -> int:
    """Connections this process may hold: its open-file limit less `DESCRIPTOR_RESERVE`
    and its guests' (`guest_descriptors`), at least 64."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft - DESCRIPTOR_RESERVE - guest_descriptors())


def write_response(send: Callable[..., Any], response: Response, head: bool) -> bool:
    """Write `response` whole (its `content-length` added, none for 204 and 304; no body
    for HEAD: `response.framing`) in one socket write, at the end of this turn of the
    loop (`WriteBatch`), when `send` is an `Exchange`'s, for a response not yet started
    on a connection that takes writes. Returns False, having written nothing (and the
    batch sent), otherwise: the caller then uses `send`. Raises RuntimeError for a
    header name or value HTTP forbids, as uvicorn's `send` does."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not Exchange:
        return False
    writes = cycle.writes
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused:
        writes.flush()  # what `send` writes comes after what was finished before
        return False
    length, body = framing(response, head)
    lines = response.lines
    if lines is None:
        lines = header_lines(response.headers)
    content = [STATUS_LINE[response.status]]
    for name, value in cycle.default_headers:  # uvicorn's own (date, server)
        content += (name, b": ", value, b"\r\n")
    content.append(lines)
    if length is not None:
        content += (b"content-length: ", length, b"\r\n")
    closing = _closing(response)  # its own `connection: close` is among its lines
    # Answered before a body it never asked for (no 100 sent): the client may send that
    # body or its next request next, and no one can tell which (RFC 9110 10.1.1): close.
    unasked = cycle.waiting_for_100_continue and cycle.more_body
    keep_alive = cycle.keep_alive and not closing and not unasked
    if closing:
        cycle.keep_alive = False
    elif not keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    if keep_alive:
        writes.add(cycle.transport, b"".join(content))
    else:
        writes.flush()
        cycle.transport.write(b"".join(content))
        cycle.transport.close()
    if len(body) >= LARGE:
        cycle.sweep.answer_added(len(body))
    cycle.message_event.set()
    cycle.on_response()
    return True


def _closing(response: Response) -> bool:
    """Whether `response` asks to close the connection (`connection: close`). A
    function's own never does (the header never passes: `headers.py`)."""
    if response.lines is not None:
        return False
    for name, value in response.headers:
        if name.lower() == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")]:
            return True
    return False

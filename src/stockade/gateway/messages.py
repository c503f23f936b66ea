"""The gateway's own request and response: plain objects the layers pass along.

The ASGI adapter (`app.py`) reads a whole request into a `Request` and writes a
`Response` back; every layer in between is a `Handler`: an async callable from one
to the other. Headers are lists of `(name, value)` byte pairs, names lower-case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .problem import BadRequest, HttpProblem, PayloadTooLarge, RequestTimeout
from .response import Headers, Response

__all__ = ["Request", "Response", "Handler", "Headers", "Receive", "BodyCharge", "header"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyCharge(Protocol):
    """What a body's bytes are charged to while it is read (`requestbudget.Hold`)."""

    def charge(self, size: int, stop: Callable[[], None] | None) -> None:
        """`size` more bytes arrived; `stop` (which it may call) ends the read. Raises
        to refuse them."""

    def read(self) -> None:
        """The whole body arrived (raises to refuse it all the same)."""

    def refusal(self) -> HttpProblem | None:
        """Why the read was stopped, if it was."""


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


@dataclass(slots=True)
class Request:
    """One HTTP request. `path` is percent-decoded, `query` the raw query string;
    `state` carries what layers learn (trace context, the matched function). The body
    is read only when a handler asks, with that handler's size limit (`read_body`)."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes = b""
    client: tuple[str, int] | None = None
    server: tuple[str, int | None] | None = None
    scheme: str = "http"
    http_version: str = "1.1"
    raw_path: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)
    receive: Receive = _no_body
    body_read: bool = False

    async def read_body(self, limit: int, timeout: float | None = None,
                        min_rate: int = 1, hold: BodyCharge | None = None) -> bytes:
        """Read the whole body into `body`. Raises PayloadTooLarge as soon as the
        declared or received length exceeds `limit` bytes, RequestTimeout when the body
        stops coming: it starts with `timeout` seconds, each byte adds `1 / min_rate`
        seconds, and the deadline is never more than `timeout` ahead (None: no
        deadline). Without that cap a client sending all but the last byte and then
        nothing held its buffered body for `size / min_rate` seconds (17 minutes for
        1 MiB). `hold` is charged each chunk before the chunk is kept (what it raises
        ends the read), and may end the read early (`BodyCharge`)."""
        if self.body_read:
            return self.body
        declared = header(self.headers, b"content-length")
        if declared is None and header(self.headers, b"transfer-encoding") is None:
            self.body_read = True  # HTTP/1.1: neither header means no body
            return self.body
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes; this function accepts "
                                  f"at most {limit}", max_body=limit)
        chunks, size = [], 0
        loop = asyncio.get_running_loop()

        def stop() -> None:  # the deadline, moved to now: the read ends with TimeoutError
            with contextlib.suppress(RuntimeError):  # it is ending already
                deadline.reschedule(-1.0)

        try:
            async with asyncio.timeout(timeout) as deadline:
                while True:
                    message = await self.receive()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"the body exceeds {limit} bytes",
                                              max_body=limit)
                    if message["type"] == "http.disconnect":
                        raise BadRequest("the client disconnected while sending the body")
                    if hold is not None and chunk:
                        hold.charge(len(chunk), stop)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                    if timeout is not None:  # bytes buy time, at most `timeout` ahead
                        deadline.reschedule(min(
                            (deadline.when() or 0.0) + len(chunk) / min_rate,
                            loop.time() + timeout))
        except TimeoutError:
            cut = hold.refusal() if hold is not None else None
            if cut is not None:
                raise cut from None
            raise RequestTimeout(f"the body stopped coming ({size} bytes received; at "
                                 f"least {min_rate} bytes per second, none missing for "
                                 f"over {timeout:g} s)") from None
        if hold is not None:
            hold.read()
        self.body, self.body_read = b"".join(chunks), True
        return self.body

    def answered(self) -> None:
        """Its response is written: it no longer receives, and what it carries is let go.
        Its `receive` is its server's exchange, which holds it: without this the pair,
        and all the request carries, are a cycle left to the cyclic collector (ten
        objects a request, collected every ~65 requests at 6-7 µs a request), not freed
        at once. The connection keeps its last exchange until the next request: the
        run's output in `state` and the body were two more copies of a large answer
        held while the client took it."""
        self.receive = _no_body
        self.state.clear()
        self.body = b""


Handler = Callable[[Request], Awaitable[Response]]


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of `name` (lower-case bytes) in `headers`, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None

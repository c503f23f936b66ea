"""Each answer of the worker's protocol (`GuardedProtocol._start`) in a context of its
own, driven through it on a real uvicorn server: what one answer sets in its context
(a `ContextVar`, as OpenTelemetry keeps its current span) is never seen by the next, on
the same connection or pipelined behind it; an answer in flight when the server stops is
still given; one that fails after it waited is a 500."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn

from stockade.gateway.messages import Request
from stockade.gateway.protocol import guarded_protocol, write_response
from stockade.gateway.response import Response

SEEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("seen", default=None)
GET = b"GET /%s HTTP/1.1\r\nHost: test\r\n\r\n"


class Served:
    """A uvicorn server in a thread of its own, its requests answered by `answer`."""

    def __init__(self, answer: Callable[[Request], Awaitable[bytes]]) -> None:
        self.started: list[str] = []  # paths whose answer began, in order

        async def respond(request: Request, send: Callable[..., Awaitable[None]]) -> None:
            self.started.append(request.path)
            body = await answer(request)
            assert write_response(send, Response(200, [], body), False)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            _no_asgi, loop="uvloop", ws="none", lifespan="off", access_log=False,
            log_config=None, log_level="warning", timeout_graceful_shutdown=5,
            http=guarded_protocol(respond, 5.0, 64 * 1024))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.01)
            assert self.thread.is_alive(), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.sock.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


async def _no_asgi(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("requests go to the protocol's answer, never the ASGI app")


def answers(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of `count` answers read from `sock` (each with its content-length)."""
    data, bodies = b"", []
    while len(bodies) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                bodies.append(rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(bodies)} answers"
        data += chunk
    return bodies


@pytest.fixture
def remembering() -> Iterator[Served]:
    """Each answer says what SEEN held when it began, then sets it to its own path."""

    async def answer(request: Request) -> bytes:
        previous = SEEN.get()
        SEEN.set(request.path)
        return repr(previous).encode()

    with Served(answer) as served:
        yield served


def test_an_answer_sets_nothing_in_the_next_ones_context(remembering: Served) -> None:
    with remembering.connect() as sock:
        for number in range(5):
            sock.sendall(GET % str(number).encode())
            assert answers(sock, 1) == [b"None"]
    with remembering.connect() as other:
        other.sendall(GET % b"x")
        assert answers(other, 1) == [b"None"]


def test_a_pipelined_answer_does_not_inherit_the_previous_ones_context(
        remembering: Served) -> None:
    """A pipelined request is started at the end of the answer before it: in a task
    made there, it inherited that answer's context (uvicorn's, and ours before)."""
    with remembering.connect() as sock:
        sock.sendall(b"".join(GET % str(number).encode() for number in range(4)))
        assert answers(sock, 4) == [b"None"] * 4
    assert remembering.started == ["/0", "/1", "/2", "/3"]


def test_an_answer_in_flight_when_the_server_stops_is_still_given() -> None:
    waited = threading.Event()

    async def answer(request: Request) -> bytes:
        waited.set()
        await asyncio.sleep(0.3)  # the server is told to stop meanwhile
        return b"late"

    served = Served(answer)
    with served, served.connect() as sock:
        sock.sendall(GET % b"slow")
        assert waited.wait(10)
        served.server.should_exit = True
        assert answers(sock, 1) == [b"late"]


def test_an_answer_that_fails_after_it_waited_is_a_500() -> None:
    async def answer(request: Request) -> bytes:
        await asyncio.sleep(0.01)
        raise ValueError("the answer failed")

    with Served(answer) as served, served.connect() as sock:
        sock.sendall(GET % b"fails")
        assert sock.recv(65536).startswith(b"HTTP/1.1 500 ")

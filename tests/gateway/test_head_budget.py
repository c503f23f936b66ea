"""Request heads a worker holds, bounded together and per client (`header_buffer`).

Attack (found by review): each connection may hold a head of up to `max_header_size`
until `header_timeout`, and four more queued behind an answer; only the connection cap
bounded them, about 1.2 GiB a worker from one IPv6 /56. Heads still arriving after a
read and heads queued are charged to the worker's head budget (`requestbudget.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from stockade.errors import PolicyError
from stockade.gateway import load_manifest
from stockade.gateway.messages import Request
from stockade.gateway.protocol import LINE_COST, Answer, GuardedProtocol, guarded_protocol
from stockade.gateway.requestbudget import RequestBudget
from stockade.gateway.response import Response

from .conftest import Start, module

KiB = 1024
REQUEST = b"GET /hello HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _no_asgi(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("requests go to the protocol's answer, never the ASGI app")


async def _hello(request: Request, send: Callable[..., Awaitable[None]]) -> None:
    from stockade.gateway.protocol import write_response

    assert write_response(send, Response(200, [], b"hello\n"), False)


def gated(gate: asyncio.Event) -> Answer:
    """`_hello`, once `gate` is set."""

    async def answer(request: Request, send: Callable[..., Awaitable[None]]) -> None:
        await gate.wait()
        await _hello(request, send)

    return answer


class Server:
    """A worker's protocol on a real loopback socket, its head budget given."""

    def __init__(self, answer: Answer = _hello, total: int = 256 * KiB,
                 per_client: int = 128 * KiB) -> None:
        config = uvicorn.Config(_no_asgi, log_config=None)
        config.load()
        self.state = ServerState()
        self.protocol = guarded_protocol(answer, 10.0, 64 * KiB, max_connections=64,
                                         header_buffer=total,
                                         header_buffer_per_client=per_client)
        self.clock = Clock()
        budget = self.protocol.head_budget
        assert budget is not None
        budget.clock = self.clock
        self.budget: RequestBudget = budget
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: self.protocol(config=uvicorn.Config(_no_asgi, log_config=None),
                                  server_state=self.state, app_state={}),
            "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for connection in list(self.state.connections):
            connection.transport.close()
        self.server.close()

    async def connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client's connection from the loopback address `source` (closed at the end)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                       local_addr=(source, 0))
        self.writers.append(writer)
        return reader, writer


async def settle() -> None:
    """A few turns of the loop: sent bytes reach the server's protocol."""
    for _ in range(20):
        await asyncio.sleep(0.005)


async def answer_of(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed (or within two seconds)."""
    try:
        return await asyncio.wait_for(reader.read(4096), 2.0)
    except TimeoutError:
        return b""


async def answered(readers: list[asyncio.StreamReader]) -> list[bytes]:
    """What each of `readers` was sent within 0.2 s (b"": nothing)."""
    answers = []
    for reader in readers:
        try:
            answers.append(await asyncio.wait_for(reader.read(4096), 0.2))
        except TimeoutError:
            answers.append(b"")
    return answers


def incomplete_head(size: int) -> bytes:
    """A head `size` bytes long that never ends: its last header line goes on."""
    start = b"GET /hello HTTP/1.1\r\nHost: gateway.test\r\nX-Pad: "
    return start + b"a" * (size - len(start))


def test_heads_left_incomplete_are_bounded_per_client_and_in_total() -> None:
    """Three heads of 40 KiB from one address fit its 128 KiB; the fourth is 503 and
    closed. Whatever is sent, the worker's heads stay within the budget."""

    async def scenario() -> None:
        async with Server() as server:
            held = []
            for _ in range(3):
                reader, writer = await server.connect("127.0.0.2")
                writer.write(incomplete_head(40 * KiB))
                held.append((reader, writer))
            await settle()
            assert server.budget.held == 3 * (40 * KiB + LINE_COST)  # Host: one line
            reader, writer = await server.connect("127.0.0.2")
            writer.write(incomplete_head(40 * KiB))
            answer = await answer_of(reader)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 5" in answer
            assert server.budget.held == 3 * (40 * KiB + LINE_COST)
            # Another address has an allowance of its own, within the total.
            other, sender = await server.connect("127.0.0.3")
            sender.write(incomplete_head(40 * KiB))
            await settle()
            assert server.budget.held == 4 * (40 * KiB + LINE_COST) <= server.budget.total
            for _, each in held:
                each.close()
            sender.close()
            await settle()
            assert server.budget.held == 0  # a connection's charge goes with it

    asyncio.run(scenario())


def test_a_client_within_its_share_cuts_off_a_head_of_the_largest_holder() -> None:
    """The budget full of heads still arriving from two addresses above their share: a
    third client's head is served, and one of the largest holder's heads is cut off
    (503) at once. Heads are not judged by pace: an attacker churning its connections
    every second kept them all too young to be judged slow (found by review)."""

    async def scenario() -> None:
        async with Server() as server:
            attackers = []
            for source in ("127.0.0.2", "127.0.0.3"):
                for _ in range(3):
                    reader, writer = await server.connect(source)
                    writer.write(incomplete_head(40 * KiB))
                    attackers.append((reader, writer))
                await settle()
            assert server.budget.held == 6 * (40 * KiB + LINE_COST)
            reader, writer = await server.connect("127.0.0.4")
            writer.write(incomplete_head(20 * KiB))
            await settle()
            assert server.budget.held == 5 * (40 * KiB + LINE_COST) + 20 * KiB + LINE_COST
            writer.write(b"\r\n\r\n")  # the newcomer's head ends: answered
            assert (await answer_of(reader)).startswith(b"HTTP/1.1 200 ")
            answers = await answered([each for each, _ in attackers])
            refused = [answer.startswith(b"HTTP/1.1 503 ") for answer in answers]
            assert refused.count(True) == 1, answers

    asyncio.run(scenario())


def test_a_head_that_arrives_whole_costs_nothing_and_one_in_pieces_is_given_back() -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer = await server.connect("127.0.0.2")
            writer.write(REQUEST)
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0
            writer.write(REQUEST[:20])
            await settle()
            assert server.budget.held == 20
            writer.write(REQUEST[20:])
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0
            writer.close()

    asyncio.run(scenario())


def test_header_lines_are_charged_what_they_cost_the_worker() -> None:
    """255 one-byte lines are ~1 KB sent and ~25 KB held: charged as held."""

    async def scenario() -> None:
        async with Server() as server:
            reader, writer = await server.connect("127.0.0.2")
            head = b"GET /hello HTTP/1.1\r\nHost: gateway.test\r\n" + b"a:\r\n" * 200
            writer.write(head)
            await settle()
            # Each line counts once parsed: the last waits for what follows it.
            assert server.budget.held == len(head) + 200 * LINE_COST
            writer.close()

    asyncio.run(scenario())


def test_heads_queued_behind_an_answer_are_charged_until_they_begin() -> None:
    """Pipelined heads wait behind a slow answer: charged as queued (never cut off),
    given back as each begins; past the client's allowance the queue is refused."""

    async def scenario() -> None:
        gate = asyncio.Event()
        slow = gated(gate)
        async with Server(slow) as server:
            reader, writer = await server.connect("127.0.0.2")
            writer.write(REQUEST * 3)
            await settle()
            # The first is being answered; two wait, each its bytes and its Host line.
            queued = 2 * (len(b"GET/hello") + len(b"hostgateway.test") + 4 + LINE_COST)
            assert 0 < server.budget.held <= queued + 2 * len(REQUEST)
            gate.set()
            for _ in range(3):
                assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            await settle()
            assert server.budget.held == 0
            writer.close()

    asyncio.run(scenario())


def test_queued_heads_past_the_allowance_are_refused_after_the_answers_owed() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        slow = gated(gate)
        # Room for the first queued head of 60 lines, not the second.
        head = b"GET /hello HTTP/1.1\r\nHost: gateway.test\r\n" + b"a:\r\n" * 60 + b"\r\n"
        async with Server(slow, total=256 * KiB, per_client=128 * KiB) as server:
            server.budget.per_client = 8 * KiB
            reader, writer = await server.connect("127.0.0.2")
            writer.write(head * 3)
            await settle()
            assert server.budget.held <= server.budget.per_client
            gate.set()
            data = await asyncio.wait_for(reader.read(), 5.0)  # closed after the answers
            assert data.count(b"HTTP/1.1 200 ") == 2 and data.count(b"HTTP/1.1 503 ") == 0
            assert server.budget.held == 0

    asyncio.run(scenario())


def test_the_budget_must_hold_two_heads_at_their_limit(tmp_path: Path) -> None:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text('[server]\nheader_buffer_per_client = "64KiB"\n')
    with pytest.raises(PolicyError, match="header_buffer and header_buffer_per_client"):
        load_manifest(manifest)


def test_a_served_gateway_holds_its_heads_to_its_header_buffer(start_gateway: Start) -> None:
    """End to end: `[server] header_buffer_per_client` reaches the worker's protocol."""
    gateway = start_gateway(f"""
[server]
workers = 1
threads = 2
telemetry = "off"
header_buffer_per_client = "128KiB"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
""")
    host, port = gateway.url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection((host, int(port)), timeout=20)
            sock.sendall(incomplete_head(60 * KiB))
            held.append(sock)
        last = socket.create_connection((host, int(port)), timeout=20)
        held.append(last)
        last.sendall(incomplete_head(60 * KiB))
        answer = last.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 5" in answer
    finally:
        for sock in held:
            sock.close()


def test_a_protocol_class_has_its_own_head_budget() -> None:
    first = guarded_protocol(_hello, 10.0, 64 * KiB)
    second = guarded_protocol(_hello, 10.0, 64 * KiB)
    assert issubclass(first, GuardedProtocol)
    assert first.head_budget is not second.head_budget


def head_cost(url: bytes, *headers: tuple[bytes, bytes]) -> int:
    """What a whole head is charged: its target and fields, and LINE_COST a line."""
    return len(url) + sum(len(name) + len(value) + 4 + LINE_COST for name, value in headers)


async def _echo(request: Request, send: Callable[..., Awaitable[None]]) -> None:
    from stockade.gateway.protocol import write_response

    body = await request.read_body(1 << 20, 10.0)
    assert write_response(send, Response(200, [], b"got %d\n" % len(body)), False)


def test_a_whole_head_waiting_for_its_body_stays_charged() -> None:
    """Attack (the review of the budget): a head arriving whole, declaring a body never
    sent, was given back at once and held for `body_timeout` (longer, the body
    trickling) charged to nothing: 2,000 such heads of 240 lines took a worker from 44
    to 258 MiB. It is charged until its body has come, chunked bodies too."""

    async def scenario() -> None:
        async with Server(_echo) as server:
            reader, writer = await server.connect("127.0.0.2")
            head = (b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 5\r\n"
                    + b"x-a: b\r\n" * 100 + b"\r\n")
            writer.write(head)
            await settle()
            cost = head_cost(b"/echo", (b"host", b"gateway.test"), (b"content-length", b"5"),
                             *[(b"x-a", b"b")] * 100)
            assert server.budget.held == cost
            writer.write(b"hello")
            assert (await reader.readuntil(b"got 5\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0
            writer.write(b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\n"
                         b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await settle()
            cost = head_cost(b"/echo", (b"host", b"gateway.test"),
                             (b"transfer-encoding", b"chunked"))
            assert server.budget.held == cost  # past its first chunk: still held
            writer.write(b"2\r\nde\r\n0\r\n\r\n")
            assert (await reader.readuntil(b"got 5\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0
            # Past the client's allowance: 503 and closed, before the body is awaited.
            server.budget.per_client = cost - 1
            reader, writer = await server.connect("127.0.0.3")
            writer.write(head)
            assert (await answer_of(reader)).startswith(b"HTTP/1.1 503 ")
            assert server.budget.held == 0

    asyncio.run(scenario())


def test_a_head_waiting_for_a_slow_body_is_cut_off_to_make_room() -> None:
    """The fix's review: held uncuttable, heads behind bodies trickled by six addresses
    kept every honest POST out. One of the largest holder's is cut off (503)."""

    async def scenario() -> None:
        async with Server(_echo, total=2000, per_client=2000) as server:
            waiting = []
            for _ in range(2):  # 789 bytes each
                reader, writer = await server.connect("127.0.0.2")
                writer.write(b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\n"
                             b"content-length: 900000\r\n" + b"x-a: b\r\n" * 5 + b"\r\n")
                waiting.append(reader)
            await settle()
            assert server.budget.held > 1500
            reader, writer = await server.connect("127.0.0.9")
            writer.write(b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 2"
                         b"\r\n" + b"x-a: b\r\n" * 5 + b"\r\n")  # its body comes later
            await settle()
            writer.write(b"ok")
            assert (await reader.readuntil(b"got 2\n")).startswith(b"HTTP/1.1 200 ")
            answers = await answered(waiting)
            assert sum(answer.startswith(b"HTTP/1.1 503 ") for answer in answers) == 1

    asyncio.run(scenario())


def test_a_head_begun_behind_a_whole_request_in_one_read_is_charged() -> None:
    """The fix's review: a head following a whole request in the same read was counted
    toward that request, and never charged: 200 connections each holding 15 KiB
    behind a GET passed a 32 KiB allowance."""

    async def scenario() -> None:
        async with Server() as server:
            reader, writer = await server.connect("127.0.0.2")
            writer.write(REQUEST + incomplete_head(40 * KiB))
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            await settle()
            assert server.budget.held >= 40 * KiB
            held = []
            for _ in range(3):  # 40 KiB more each: the 128 KiB allowance ends at the third
                each, sender = await server.connect("127.0.0.2")
                sender.write(REQUEST + incomplete_head(40 * KiB))
                held.append(each)
            answers = [await answer_of(each) for each in held]
            # Refused behind the GET owed an answer: that answer closes the connection.
            assert sum(b"connection: close" in answer for answer in answers) == 1, answers
            assert server.budget.held <= server.budget.per_client

    asyncio.run(scenario())


def test_the_body_bytes_a_queued_request_brought_are_charged_until_it_begins() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def answer(request: Request, send: Callable[..., Awaitable[None]]) -> None:
            await gate.wait()
            await _echo(request, send)

        async with Server(answer) as server:
            reader, writer = await server.connect("127.0.0.2")
            post = b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 5000\r\n\r\n"
            writer.write(REQUEST + post + b"b" * 5000)
            await settle()
            cost = head_cost(b"/echo", (b"host", b"gateway.test"),
                             (b"content-length", b"5000"))
            assert server.budget.held == cost + 5000
            gate.set()
            assert (await reader.readuntil(b"got 5000\n")).count(b"HTTP/1.1 200 ") == 2
            assert server.budget.held == 0

    asyncio.run(scenario())


def test_the_rest_of_an_answered_body_does_not_count_toward_the_next_head() -> None:
    """The review of the budget: the dropped rest of a body answered before it ended
    stayed charged as a head after it ended, and counted toward the next head: an 8 KB
    head after 60 KB dropped was 431."""

    async def scenario() -> None:
        async with Server() as server:  # `_hello` answers without reading the body
            reader, writer = await server.connect("127.0.0.2")
            writer.write(b"POST /nf HTTP/1.1\r\nHost: t\r\ncontent-length: 60000\r\n\r\n")
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            writer.write(b"x" * 30000)
            await settle()
            writer.write(b"x" * 30000)
            await settle()
            assert server.budget.held == 0
            writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nx-pad: " + b"p" * 8000 + b"\r\n\r\n")
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0

    asyncio.run(scenario())


def test_a_pipelined_head_whose_body_trickles_is_charged_when_it_begins() -> None:
    """The second fix review: a POST queued behind a GET was given back as it began,
    its body still coming: 20 such heads of 8 KB held nothing charged."""
    gate = asyncio.Event()

    async def answer(request: Request, send: Callable[..., Awaitable[None]]) -> None:
        if request.method == "GET":
            await gate.wait()
        await _echo(request, send)

    async def scenario() -> None:
        async with Server(answer) as server:
            reader, writer = await server.connect("127.0.0.2")
            post = (b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 5\r\n"
                    b"x-pad: " + b"p" * 8000 + b"\r\n\r\n")
            writer.write(REQUEST + post)
            await settle()
            gate.set()
            assert (await reader.readuntil(b"got 0\n")).startswith(b"HTTP/1.1 200 ")
            await settle()
            cost = head_cost(b"/echo", (b"host", b"gateway.test"), (b"content-length", b"5"),
                             (b"x-pad", b"p" * 8000))
            assert server.budget.held == cost  # begun, its body awaited: still held
            writer.write(b"hello")
            assert (await reader.readuntil(b"got 5\n")).startswith(b"HTTP/1.1 200 ")
            assert server.budget.held == 0

    asyncio.run(scenario())


def test_a_head_begun_behind_a_whole_request_counts_what_came_with_it_later() -> None:
    """The second fix review: the read a head began in (behind a whole request) was
    charged, then forgotten at the next read: 120 KB held, charged 60 KB."""

    async def scenario() -> None:
        async with Server() as server:
            reader, writer = await server.connect("127.0.0.2")
            writer.write(REQUEST + incomplete_head(30 * KiB))
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            await settle()
            first = server.budget.held
            writer.write(b"a" * 20 * KiB)
            await settle()
            assert server.budget.held >= first + 20 * KiB

    asyncio.run(scenario())


def test_a_cut_after_the_answer_closes_without_a_second_answer() -> None:
    """The second fix review: a POST answered before its body ended, then cut off to
    make room, got a 503 after its 200: a proxy reads it as its next request's."""

    async def scenario() -> None:
        async with Server(total=20000, per_client=20000) as server:  # `_hello`: no body read
            reader, writer = await server.connect("127.0.0.2")
            writer.write(b"POST /f HTTP/1.1\r\nHost: t\r\ncontent-length: 900000\r\n"
                         + b"x-a: b\r\n" * 100 + b"\r\n")
            assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200 ")
            await settle()
            assert server.budget.held > 10000  # its head, its body still coming
            other, sender = await server.connect("127.0.0.3")
            sender.write(incomplete_head(9000))
            await settle()
            assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed, nothing more

    asyncio.run(scenario())

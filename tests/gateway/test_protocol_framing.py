"""The worker's HTTP protocol against bytes no callback reports and requests held queued,
over real connections: chunk extensions and line ends around a chunked body's data,
blank lines sent while a request is answered, pipelined heads dense with header lines,
and request targets in absolute form."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Gateway, gateway_env, module
from .test_protocol import closed_by_server, connect, connected

MANIFEST = f"""
[server]
workers = 1
telemetry = "off"
breakers = false
header_timeout = "2s"
keep_alive_timeout = "1s"
body_timeout = "3s"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"

[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"

[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
[function.limits]
timeout = "700ms"
fuel = "unlimited"
"""
REQUEST = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("framing")
    manifest = root / "stockade.toml"
    manifest.write_text(MANIFEST)
    server = Gateway(manifest, gateway_env(shared_cache, root / "state"), ())
    yield server
    server.stop()


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send `data`; the server closing the connection halfway is expected."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_an_endless_chunk_extension_is_refused(gateway: Gateway) -> None:
    """A chunk's size line and its extensions are neither body, head nor trailers: one
    connection streamed 3.6 GB of extension in 5 s (3.2 s of the worker's CPU) until the
    body's deadline (found by review). A chunked body's bytes that are not data are
    bounded: 400, and the connection closes."""
    with connect(gateway) as sock:
        sock.sendall(CHUNKED_HEAD + b"1;a=")
        try:
            for _ in range(64):  # 4 MiB at most; refused after 128 KiB
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_extensions_on_chunks_of_data_are_bounded_by_that_data(gateway: Gateway) -> None:
    """A chunk of data now and then kept a body above `body_min_rate`, and each size line
    carried extensions at will (3.5 GB beside 7.7 KB of data in 6 s, for `max_body` /
    `body_min_rate` seconds). Framing beyond twice the data, and two heads' worth, is
    refused: 400, closed."""
    line = b"1;e=" + b"x" * 10_000 + b"\r\nd\r\n"
    with connect(gateway) as sock:
        sock.sendall(CHUNKED_HEAD)
        send_quietly(sock, line * 200 + b"0\r\n\r\n")  # 2 MB of extension, 200 data bytes
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1


def test_chunks_with_modest_extensions_are_served(gateway: Gateway) -> None:
    """A client naming each chunk (`1000;name=value`) is far inside the bound, and so is
    one writing small chunks with long hexadecimal sizes."""
    body = (b"1000;name=value\r\n" + b"b" * 0x1000 + b"\r\n") * 100 \
        + (b"00000008\r\n" + b"c" * 8 + b"\r\n") * 3000 + b"0\r\n\r\n"
    with connect(gateway) as sock:
        sock.sendall(CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                     + body)
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.endswith(b"b" * 0x1000 * 100 + b"c" * 8 * 3000)


def test_blank_lines_sent_while_a_request_is_answered_count_toward_the_next_head(
        gateway: Gateway) -> None:
    """Bytes after a whole request count toward the next head from the request's end, not
    once its answer went out: 247 MB of blank lines were read, counted nowhere, during a
    5 s answer (found by review). Past the head's limit the next head is refused as one
    too large: the answer owed goes out, closing the connection."""
    with connect(gateway) as sock:
        sock.sendall(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")  # answered in 0.7 s
        sender = threading.Thread(target=send_quietly, args=(sock, b"\r\n" * 262_144),
                                  daemon=True)
        sender.start()
        answer = closed_by_server(sock)
        sender.join(20)
    assert answer.startswith(b"HTTP/1.1 504 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in answer.lower()


def test_input_ignored_while_answers_are_owed_is_read_only_so_far() -> None:
    """Once the next head is refused, what the client sends while the answer owed is made
    is read and dropped (a close with unread input resets the connection, and the answer
    with it), but only up to 1 MiB: then reading stops. Before, it was read for as long
    as the answer took."""
    from stockade.gateway.protocol import IGNORED_MAX, write_response
    from stockade.gateway.response import Response

    gate = asyncio.Event()

    async def answer(request: object, send: object) -> None:
        await gate.wait()
        assert write_response(send, Response(200, [], b"ok"), False)

    async def scenario() -> tuple[list[bool], list[bytes]]:
        protocol, transport = connected(answer)
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
        reading = []
        for _ in range(4 * IGNORED_MAX // 65536):
            protocol.data_received(b"\r\n" * 32768)  # past the head's limit: refused
            reading.append(transport.reading)
        gate.set()
        for _ in range(4):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return reading, transport.written

    reading, written = asyncio.run(scenario())
    assert reading[:16] == [True] * 16 and not reading[-1], reading
    assert len(written) == 1 and written[0].startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in written[0].lower()


def dense_head(fields: int) -> bytes:
    """A request with `fields` header lines, all but Host one byte each."""
    return b"GET /hello HTTP/1.1\r\nHost: t\r\n" + b"a:\r\n" * (fields - 1) + b"\r\n"


def test_pipelined_heads_dense_with_header_lines_hold_a_bounded_queue(
        gateway: Gateway) -> None:
    """99 heads of 255 one-byte header lines queued behind an answer read slowly held ~1
    MB of the worker per connection for 104 KB sent (a worker grew 79 -> 343 MB from one
    address). What one connection holds queued is at most four heads' bytes and 16 header
    lines a request at `MAX_PIPELINED`'s depth (1,600): past it the next head is refused
    as one past `MAX_PIPELINED` is (those queued answered, the last closing the
    connection)."""
    with connect(gateway) as sock:
        sock.sendall(REQUEST + dense_head(255) * 10)
        answer = closed_by_server(sock)
    # The one answered, then six heads of 255 lines (1,530); the seventh passed 1,600.
    assert answer.count(b"HTTP/1.1 200 ") == 7, answer.count(b"HTTP/1.1 200 ")
    assert b" 400 " not in answer and b" 431 " not in answer
    assert answer.lower().count(b"connection: close") == 1
    assert answer.endswith(b"Hello, world!\n")


def test_a_pipelining_client_with_ordinary_heads_keeps_its_connection(
        gateway: Gateway) -> None:
    """A hundred pipelined requests of sixteen header lines each (what proxies and
    clients send; ten lines a request cut such a pipeline short at first) are inside the
    queue's bounds: all answered, and the connection stays open."""
    head = (b"GET /hello HTTP/1.1\r\nHost: gateway.test\r\nUser-Agent: pipeliner/1.0\r\n"
            b"Accept: */*\r\nAccept-Encoding: identity\r\nAccept-Language: en\r\n"
            b"X-Request-Id: 0123456789abcdef\r\nCache-Control: no-cache\r\n"
            b"Referer: http://gateway.test/index.html\r\n"
            + b"".join(b"X-Trace-%d: abcdef0123456789\r\n" % n for n in range(8)) + b"\r\n")
    with connect(gateway) as sock:
        sock.sendall(head * 100)
        answer = b""
        while answer.count(b"Hello, world!\n") < 100:
            data = sock.recv(65536)
            assert data, answer[-300:]
            answer += data
        assert answer.count(b"HTTP/1.1 200 ") == 100
        assert b"connection: close" not in answer.lower()
        sock.sendall(REQUEST)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def echoed(answer: bytes) -> dict[str, str]:
    """The variables the echo function printed (its body's first block)."""
    body = answer.split(b"\r\n\r\n", 1)[1].decode()
    return dict(line.split("=", 1) for line in body.split("\n\n", 1)[0].splitlines())


@pytest.mark.parametrize("target", [
    b"https://evil:99/echo?q=1",  # another host than Host's
    b"http://t/echo", b"HTTPS://T/echo", b"http://t/metrics",  # Host's own
    b"http://t:80/echo", b"http://u@t/echo", b"ftp://t/echo", b"http:/t/echo", b"http://",
    b"t:80",  # authority form
])
def test_a_target_in_absolute_form_is_refused(gateway: Gateway, target: bytes) -> None:
    """`GET https://evil:99/echo` with `Host: t` was served as `http://t/echo`: the Host
    header won over the target's authority (RFC 9112 3.2.2 says the target's wins).
    Served as its origin form when the two agreed, `GET http://t/metrics` passed a
    proxy's rule for `/metrics` matching the target as sent (found by review). A gateway
    is an origin server, sent origin-form targets: 400, closed."""
    with connect(gateway) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"evil" not in answer and b"X_FULL_URL" not in answer and b"stockade_" not in answer


def test_a_target_in_absolute_form_without_a_host_header_is_refused(gateway: Gateway) -> None:
    """HTTP/1.0 needs no Host header: the target's authority would then be the request's
    only host, which the function would not see (it reads Host). Refused, 400."""
    with connect(gateway) as sock:
        sock.sendall(b"GET http://t/echo HTTP/1.0\r\n\r\n")
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.0 400 "), \
        answer[:200]


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_an_interim_100_goes_to_http_1_1_clients_only(gateway: Gateway, version: bytes) -> None:
    """`Expect: 100-continue` from an HTTP/1.0 client is ignored (RFC 9110 10.1.1), and no
    1xx goes to one (15.2): an HTTP/1.0 proxy would take `100 Continue` for the answer,
    and the answer for its body (found by review)."""
    with connect(gateway) as sock:
        sock.sendall(b"POST /echo HTTP/" + version + b"\r\nHost: t\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\n")
        sock.settimeout(0.5)
        try:
            interim = sock.recv(65536)
        except TimeoutError:
            interim = b""
        sock.settimeout(20)
        sock.sendall(b"hello")
        answer = interim + closed_by_server(sock) if version == b"1.0" else interim
    if version == b"1.1":
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    else:
        assert interim == b"" and answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert answer.endswith(b"\n\nhello")


@pytest.mark.parametrize("head", [
    b"GET /echo#x HTTP/1.1\r\nHost: t\r\n\r\n",  # a fragment: no part of a request target
    b"GET /hello#/../echo HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
    b"Content-Type: application/json\r\nContent-Length: 0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: a/b\r\ncontent-type: a/b\r\n"
    b"Content-Length: 0\r\n\r\n",
])
def test_a_head_a_proxy_may_read_otherwise_is_refused(gateway: Gateway, head: bytes) -> None:
    """A fragment in the target (RFC 9112 3.2 has none) was dropped here, where a proxy
    in front may keep it in the path it matches; a second `Content-Type` reached the
    function as the last while a proxy's filter may read the first (found by review).
    Both are refused as a second `Host` is: 400, closed."""
    with connect(gateway) as sock:
        sock.sendall(head)
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"X_FULL_URL" not in answer


@pytest.mark.parametrize("target", [b"/echo/%FF", b"/echo/%c3", b"/echo/%C3%28"])
def test_a_path_whose_escapes_are_not_utf_8_is_refused(gateway: Gateway, target: bytes) -> None:
    """Escapes that decode to no UTF-8 text were replaced by U+FFFD, so `/echo/%FF` and
    `/echo/%FE` reached the function as one path while a proxy in front tells them apart
    (found by review): 400, closed."""
    with connect(gateway) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_path_whose_escapes_are_utf_8_is_served(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/caf%C3%A9 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert echoed(answer)["PATH_INFO"] == "/café"

"""CGI mapping in both directions, on the gateway's own request and response objects."""

from __future__ import annotations

import pytest

from stockade.gateway import BadGateway, BadRequest
from stockade.gateway.cgi import cgi_environ, parse_output
from stockade.gateway.messages import Request


def request(path: str = "/fn/a/b", **extra: object) -> Request:
    fields: dict[str, object] = {
        "method": "GET", "path": path, "query": "q=1",
        "headers": [(b"host", b"example.test:8080"), (b"x-a", b"1"), (b"x-a", b"2"),
                    (b"authorization", b"secret"), (b"proxy", b"evil"), (b"bad header", b"x")],
        "client": ("10.0.0.1", 4000), "server": ("127.0.0.1", 8080), "raw_path": path.encode(),
    }
    fields.update(extra)
    return Request(**fields)  # type: ignore[arg-type]


def test_environment_from_a_request() -> None:
    env = dict(cgi_environ(request(), "/fn"))
    assert env["SCRIPT_NAME"] == "/fn" and env["PATH_INFO"] == "/a/b"
    assert env["SERVER_NAME"] == "example.test" and env["SERVER_PORT"] == "8080"
    assert env["HTTP_X_A"] == "1, 2" and env["REMOTE_ADDR"] == "10.0.0.1"
    assert env["X_FULL_URL"] == "http://example.test:8080/fn/a/b?q=1"
    assert not {"HTTP_AUTHORIZATION", "HTTP_PROXY", "AUTH_TYPE", "CONTENT_TYPE"} & env.keys()
    assert not any(key.startswith("HTTP_BAD") for key in env)


def test_root_route_and_nul_bytes() -> None:
    env = dict(cgi_environ(request("/x"), "/"))
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/x"
    with pytest.raises(BadRequest):
        cgi_environ(request("/fn/\0"), "/fn")


def test_output_to_response() -> None:
    response = parse_output(b"Status: 404 Gone\r\nX-A: 1\r\nConnection: close\r\n\r\nbody",
                            100, 100)
    assert response.status == 404 and response.body == b"body"
    assert response.headers == [(b"x-a", b"1")]
    assert parse_output(b"Location: /next\n\n", 100, 100).status == 302
    assert parse_output(b"Status: 204\nContent-Type: a/b\n\nignored", 100, 100).body == b""
    assert parse_output(b"Content-Type: a/b\n\n\n\nx", 100, 100).body == b"\n\nx"


@pytest.mark.parametrize("output", [
    b"", b"no header block", b"Status: 99\n\n", b"Status: abc\n\n", b"Bad Name: x\n\n",
    b"X-A: \x01\n\n", b"Content-Type: a/b\n\n" + b"x" * 101, b"X-A: " + b"a" * 200 + b"\n\n",
])
def test_malformed_output_is_bad_gateway(output: bytes) -> None:
    with pytest.raises(BadGateway):
        parse_output(output, 100, 100)


def test_a_header_block_seen_before_answers_the_same() -> None:
    # Parsed blocks are remembered; a response's own header list is still its own.
    output = b"Content-Type: text/plain\nX-Run: 1\n\nbody one"
    first = parse_output(output, 1024, 1024)
    first.headers.append((b"x-added", b"by a layer"))
    second = parse_output(output.replace(b"body one", b"body two"), 1024, 1024)
    assert second.headers == [(b"content-type", b"text/plain"), (b"x-run", b"1")]
    assert (second.status, second.body) == (200, b"body two")
    with pytest.raises(BadGateway):
        parse_output(b"Bad Header\n\nx", 1024, 1024)
    with pytest.raises(BadGateway):  # a malformed block is not remembered as good
        parse_output(b"Bad Header\n\nx", 1024, 1024)


def test_environment_as_bytes_matches_the_text_pairs() -> None:
    from stockade.gateway.cgi import CgiEnvironment

    req = request(headers=[(b"host", b"h:1"), (b"content-type", b"a/b"), (b"x-caf\xe9", b"v"),
                           (b"x-latin", b"caf\xe9"), (b"content-type", b"c/d")])
    names, values, count = CgiEnvironment("/fn", (("PATH", "/bin"), ("HTTP_X", "host"),
                                                  ("QUERY_STRING", "host"))).block(req)
    pairs = list(zip(names.split(b"\0")[:-1], values.split(b"\0")[:-1], strict=True))
    assert len(pairs) == count and pairs[-1] == (b"PATH", b"/bin")
    env = dict(pairs)
    # The last Content-Type wins; Latin-1 header bytes become UTF-8 text; host variables
    # named like CGI ones never shadow the request's (nor appear at all).
    assert env[b"CONTENT_TYPE"] == b"c/d" and env[b"HTTP_X_LATIN"] == "café".encode()
    assert env[b"QUERY_STRING"] == b"q=1" and b"HTTP_X" not in env
    assert not any(name.startswith(b"HTTP_X_CAF") for name in env)
    assert dict(cgi_environ(req, "/fn")) == {
        name.decode(): value.decode() for name, value in pairs if name != b"PATH"}


def test_a_nul_byte_in_a_header_is_a_bad_request() -> None:
    from stockade.gateway.cgi import CgiEnvironment

    with pytest.raises(BadRequest):
        CgiEnvironment("/fn").block(request(headers=[(b"x-a", b"a\0b")]))

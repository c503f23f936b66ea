"""CGI mapping in both directions, on the gateway's own request and response objects."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from stockade.gateway import BadGateway, BadRequest
from stockade.gateway.cgi import CgiEnvironment, cgi_environ, parse_output
from stockade.gateway.headers import HeaderRules
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


def test_hop_by_hop_headers_and_those_connection_names_are_not_passed() -> None:
    hop = [(b"host", b"h"), (b"connection", b"Keep-Alive, X-Secret"), (b"x-secret", b"s"),
           (b"keep-alive", b"5"), (b"te", b"trailers"), (b"transfer-encoding", b"chunked"),
           (b"upgrade", b"h2c"), (b"proxy-connection", b"x"), (b"connection", b" content-type"),
           (b"content-type", b"a/b"), (b"x-kept", b"k")]
    rules = HeaderRules.build("/fn", withhold=())  # none withheld: still none of those
    env = dict(cgi_environ(request(headers=hop), "/fn", rules))
    assert not {"HTTP_CONNECTION", "HTTP_X_SECRET", "HTTP_KEEP_ALIVE", "HTTP_TE",
                "HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_PROXY_CONNECTION"} & env.keys()
    # The body's type is no hop's to take away.
    assert env["HTTP_X_KEPT"] == "k" and env["HTTP_HOST"] == "h" and env["CONTENT_TYPE"] == "a/b"
    # `Connection: close` or `keep-alive` names no header: the rest pass.
    env = dict(cgi_environ(request(headers=[(b"connection", b"close"), (b"x-kept", b"k")]),
                           "/fn"))
    assert env["HTTP_X_KEPT"] == "k" and "HTTP_CONNECTION" not in env


def test_a_connection_header_of_thousands_of_names_is_refused_unread() -> None:
    # 16,000 names in one 64 KiB header were each looked up (30 ms of the worker's loop
    # a request), and each cached, emptying the header-name cache four times over.
    names = b", ".join(b"n%d" % index for index in range(16_000))
    environment = CgiEnvironment("/fn")
    headers = [(b"connection", names), (b"x-a", b"1")]
    with pytest.raises(BadRequest, match="more than 32 options"):
        environment.block(request(headers=headers))
    assert len(environment._keys) < 64
    # Up to the bound, only the headers sent are looked up.
    few = b", ".join(b"n%d" % index for index in range(32))
    env = dict(cgi_environ(request(headers=[(b"connection", few), (b"n3", b"x"),
                                            (b"x-a", b"1")]), "/fn"))
    assert "HTTP_N3" not in env and env["HTTP_X_A"] == "1"


def test_the_full_url_is_the_target_as_sent() -> None:
    """An encoded `?` in the path is part of the path: built from the decoded path,
    X_FULL_URL showed it as a query the request did not have."""
    env = dict(cgi_environ(request("/fn/a?admin=1#x", query="", raw_path=b"/fn/a%3Fadmin=1%23x"),
                           "/fn"))
    assert env["X_FULL_URL"] == "http://example.test:8080/fn/a%3Fadmin=1%23x"
    assert env["QUERY_STRING"] == "" and env["PATH_INFO"] == "/a?admin=1#x"


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
    b"Status: 100 Continue\n\nHTTP/1.1 200 OK\r\n\r\n", b"Status: 101\n\n",
    b"Status: 103\nLink: </a>\n\n", b"Status: 199\n\n", b"Status: 600\n\n",
    b"Status: 0200\n\n",
    b"X-A: \x01\n\n", b"Content-Type: a/b\n\n" + b"x" * 101, b"X-A: " + b"a" * 200 + b"\n\n",
])
def test_malformed_output_is_bad_gateway(output: bytes) -> None:
    with pytest.raises(BadGateway):
        parse_output(output, 100, 100)


@pytest.mark.parametrize("output", [
    b"Status: 200\nStatus: 500\n\nbody", b"Status: 404\r\nX-A: 1\r\nstatus: 404\r\n\r\n",
])
def test_two_status_lines_are_bad_gateway(output: bytes) -> None:
    """Which the function meant is unknown (the last one won)."""
    with pytest.raises(BadGateway, match="more than one Status"):
        parse_output(output, 100, 100)


@pytest.mark.parametrize("separator", [b"\n\n", b"\r\n\r\n"])
def test_a_header_block_past_the_allowance_is_said_to_be_so(separator: bytes) -> None:
    """It was reported as no header block at all."""
    output = b"X-A: 1\n" * 20 + separator + b"body"
    with pytest.raises(BadGateway, match="header block is larger than 100B"):
        parse_output(output, 100, 100)
    with pytest.raises(BadGateway, match="wrote no CGI header block"):
        parse_output(b"x" * 200, 100, 100)


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


def test_request_headers_a_function_never_sees() -> None:
    headers = [(b"host", b"h"), (b"x-forwarded-for", b"1.2.3.4"),
               (b"x_forwarded_for", b"6.6.6.6"), (b"x-forwarded_for", b"6.6.6.6"),
               (b"cookie", b"sid=1"), (b"x-api-key", b"k"), (b"x-amz-security-token", b"t"),
               (b"authorization", b"Bearer t"), (b"proxy", b"http://evil"), (b"x-ok", b"1")]
    env = dict(cgi_environ(request(headers=headers), "/fn"))
    # One client-chosen spelling never merges into the proxy's variable.
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4" and env["HTTP_X_OK"] == "1"
    assert not {"HTTP_COOKIE", "HTTP_X_API_KEY", "HTTP_X_AMZ_SECURITY_TOKEN",
                "HTTP_AUTHORIZATION", "HTTP_PROXY"} & env.keys()
    opened = HeaderRules.build("/fn", cookies="own", passed=("x-api-key",))
    env = dict(cgi_environ(request(headers=headers), "/fn", opened))
    assert env["HTTP_COOKIE"] == "sid=1" and env["HTTP_X_API_KEY"] == "k"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert not {"HTTP_AUTHORIZATION", "HTTP_PROXY", "HTTP_X_AMZ_SECURITY_TOKEN"} & env.keys()
    # The server's list replaces the default; Proxy stays withheld whatever it says.
    open_all = HeaderRules.build("/fn", withhold=())
    env = dict(cgi_environ(request(headers=headers), "/fn", open_all))
    assert "HTTP_AUTHORIZATION" in env and "HTTP_PROXY" not in env
    assert "HTTP_COOKIE" not in env  # cookies follow `cookies`, not the list


def test_response_headers_pass_an_allow_list() -> None:
    output = (b"Content-Type: text/plain\nX-Mine: 1\nStrict-Transport-Security: max-age=0\n"
              b"Server: evil\nDate: then\nAlt-Svc: h2=\":1\"\nClear-Site-Data: *\n"
              b"X-Accel-Redirect: /secret\nX-Sendfile: /etc/shadow\nConnection: close\n"
              b"Transfer-Encoding: chunked\nContent-Length: 9\nTE: trailers\nTrailer: X\n"
              b"Upgrade: h2c\nKeep-Alive: 1\nProxy-Connection: x\nProxy-Authenticate: y\n"
              b"Set-Cookie: a=b; Path=/\nCache-Control: no-store\n\nbody")
    response = parse_output(output, 100, 1000, HeaderRules.build("/fn"))
    assert response.headers == [(b"content-type", b"text/plain"), (b"x-mine", b"1"),
                                (b"cache-control", b"no-store")]


@pytest.mark.parametrize(("cookie", "kept"), [
    (b"a=b; Path=/", None),
    (b"a=b; Path=/fnx", None),
    (b"a=b; Path=/other", None),
    (b"a=b; Path=/fn; Path=/", None),
    (b"a=b; path=/fn/x; Domain=example.test", None),
    (b"a=b; Path=relative", None),
    (b"a=b; Path=/fn/../admin", None),  # under the route only as text
    (b"a=b; Path=/fn/./x", None),
    (b"a=b; Path=/fn", b"a=b; Path=/fn"),
    (b"a=b; HttpOnly; PATH=/fn/sub", b"a=b; HttpOnly; PATH=/fn/sub"),
    (b"a=b; Secure", b"a=b; Secure; Path=/fn"),
])
def test_cookies_stay_on_the_function_path(cookie: bytes, kept: bytes | None) -> None:
    output = b"Set-Cookie: " + cookie + b"\n\n"
    owner = parse_output(output, 100, 1000, HeaderRules.build("/fn", cookies="own"))
    assert owner.headers == ([] if kept is None else [(b"set-cookie", kept)])
    # Without `cookies = "own"` no cookie is ever set.
    assert parse_output(output, 100, 1000, HeaderRules.build("/fn")).headers == []


def _retained(make: Callable[[int], object], count: int) -> int:
    """Bytes still allocated after `count` calls of `make` whose results are dropped:
    what the caches the calls fill keep."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            make(index)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


LONG = 60_000  # bytes: most of a 64 KiB request head


@pytest.mark.parametrize("where", ["name", "host"])
def test_long_header_names_and_hosts_from_clients_are_not_remembered(where: str) -> None:
    # 4,096 unique 60 KB names or Hosts held 1 GB per function per worker (review).
    environment = CgiEnvironment("/fn")

    def send(index: int) -> object:
        unique = b"%08d" % index + b"a" * LONG
        headers = [(b"host", unique)] if where == "host" else [(b"host", b"h"),
                                                               (b"x-" + unique, b"1")]
        return environment.block(request(headers=headers))

    assert _retained(send, 200) < 2 * LONG  # it kept 200 x 2 x 60 KB
    names, values, _ = environment.block(request(headers=[(b"host", b"h"), (b"x-a", b"1")]))
    assert b"HTTP_X_A\0" in names  # short names are still passed (and remembered)


def test_long_header_blocks_from_functions_are_not_remembered() -> None:
    # A function writing a unique 60 KB header each time pinned 240 MB (review).
    rules = HeaderRules.build("/fn")

    def answer(index: int) -> object:
        block = b"X-Pad: " + b"%08d" % index + b"p" * LONG
        return parse_output(block + b"\n\nbody", 1024, 64 * 1024, rules)

    assert _retained(answer, 200) < 2 * LONG
    assert parse_output(b"X-Pad: " + b"p" * LONG + b"\n\nok", 1024, 64 * 1024, rules).body \
        == b"ok"


@pytest.mark.parametrize(("host", "server", "name", "url"), [
    (b"[::1]:8080", ("::1", 8080), "[::1]", "http://[::1]:8080/fn/a/b?q=1"),
    (b"[::1]", ("::1", 80), "[::1]", "http://[::1]/fn/a/b?q=1"),
    (None, ("::1", 8080), "[::1]", "http://[::1]/fn/a/b?q=1"),
    (b"example.test:8080", ("127.0.0.1", 8080), "example.test",
     "http://example.test:8080/fn/a/b?q=1"),
])
def test_an_ipv6_host_is_named_without_its_port(host: bytes | None,
                                                server: tuple[str, int], name: str,
                                                url: str) -> None:
    """`Host: [::1]:8080` gave SERVER_NAME `[::1]:8080`, its port included (its colons
    hid it); with no Host, an IPv6 listening address went unbracketed into the URL."""
    headers = [] if host is None else [(b"host", host)]
    env = dict(cgi_environ(request(headers=headers, server=server), "/fn"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["X_FULL_URL"]) == \
        (name, str(server[1]), url)

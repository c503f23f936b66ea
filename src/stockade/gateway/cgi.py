"""WAGI-style CGI over WASI: a request as environment variables, stdout as a response.

In: `REQUEST_METHOD`, `PATH_INFO` (the path after the route), `SCRIPT_NAME` (the route),
`QUERY_STRING`, `CONTENT_LENGTH`, `CONTENT_TYPE` (when sent), `HTTP_*` per header,
`SERVER_*`, `REMOTE_ADDR`, and WAGI's `X_MATCHED_ROUTE`, `X_FULL_URL`, `X_RAW_PATH_INFO`;
the body goes to standard input. Unset rather than empty: `AUTH_TYPE` (credentials are
never passed), `CONTENT_TYPE` without one. Which headers become `HTTP_*` is the
function's `HeaderRules` (headers.py): no credentials, no `Cookie` unless it owns
cookies, no name containing `_`.

Out: header lines, an empty line, the body. `Status` sets the status, 200 to 599 only,
once (default 200; 302 with only `Location`): an interim 1xx, `101 Switching Protocols`
included, would let a function write the raw HTTP stream of the connection, so it is a
malformed response (502). Other headers pass the function's response allow-list; the
gateway sets `Content-Length` itself. 204 and 304 responses carry no body.
"""

from __future__ import annotations

import re

from ..envblock import EnvBlock
from ..policy import format_size
from .headers import DEFAULT_RULES, HOP_BY_HOP, HeaderRules
from .messages import Headers, Request, Response
from .problem import BadGateway, BadRequest
from .response import FORBIDDEN_IN_VALUE, NO_BODY_STATUSES, header_lines

__all__ = ["CgiEnvironment", "cgi_environ", "parse_output", "MAX_HEADER_LINES",
           "SERVER_SOFTWARE"]

SERVER_SOFTWARE = "Stockade"
MAX_HEADER_LINES = 100
_ENV_NAME = re.compile(rb"^[A-Z0-9_]+\Z")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# The variables every request gets, in this order (then CONTENT_TYPE and HTTP_*).
_FIXED = (b"GATEWAY_INTERFACE", b"SERVER_SOFTWARE", b"SERVER_PROTOCOL", b"SERVER_NAME",
          b"SERVER_PORT", b"REQUEST_METHOD", b"SCRIPT_NAME", b"PATH_INFO", b"PATH_TRANSLATED",
          b"QUERY_STRING", b"CONTENT_LENGTH", b"REMOTE_ADDR", b"X_MATCHED_ROUTE",
          b"X_RAW_PATH_INFO", b"X_FULL_URL")
_FIXED_NAMES = b"".join(name + b"\0" for name in _FIXED)
_SOFTWARE = SERVER_SOFTWARE.encode()
# The headers CGI treats apart (b"": never an HTTP_* variable), the hop-by-hop ones among
# them: known from the start, they cost no look-up in the rules.
_SPECIAL_HEADERS = {b"content-type": b"CONTENT_TYPE", b"content-length": b"",
                    **{name.encode(): b"" for name in HOP_BY_HOP}}
MAX_CONNECTION_OPTIONS = 32  # names one request's Connection may list (a few in practice)
# `Connection` values that name no other header (RFC 9112 9.3, 9.6; 7.8).
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade"})
# The caches below are keyed by what clients and functions send: bounded in entries and,
# by caching only short keys, in bytes. A header name or Host value can be most of a
# 64 KiB request head, and a function's header block 64 KiB: 4,096 names of 60 KB held
# 1 GB per function per worker (found by review).
_HEADER_KEYS_MAX = 4096
_CACHED_KEY_MAX = 256  # bytes of a header name or Host value remembered
_PROTOCOLS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0", "2": b"HTTP/2"}
_SCHEMES = {"http": b"http", "https": b"https"}
_METHODS = {name: name.encode() for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                             "OPTIONS")}

class CgiEnvironment:
    """The CGI variables of requests routed at prefix `route`, as bytes, after `base`
    (the host variables a function gets); request headers as `rules` allow. A base
    variable named like a CGI one (`HTTP_*`, `CONTENT_TYPE`, the fixed names) is not
    passed: the request's own wins."""

    def __init__(self, route: str, base: tuple[tuple[str, str], ...] = (),
                 rules: HeaderRules = DEFAULT_RULES) -> None:
        self._rules = rules
        # Header name -> variable name (b"" for one never passed), learned once per name.
        self._keys = dict(_SPECIAL_HEADERS)
        self._servers: dict[tuple[bytes | None, tuple[str, int | None] | None],
                            tuple[bytes, bytes, bytes]] = {}
        prefix = "" if route == "/" else route
        self._prefix, self._prefix_bytes = prefix, prefix.encode()
        self._ascii_prefix, self._prefix_length = prefix.isascii(), len(prefix)
        self._matched = (prefix + "/...").encode()
        kept = [(name, value) for name, value in base
                if name.encode() not in _FIXED and name != "CONTENT_TYPE"
                and not name.startswith("HTTP_")]
        self._base_names = b"".join(name.encode() + b"\0" for name, _ in kept)
        self._base_values = b"".join(value.encode() + b"\0" for _, value in kept)
        self._base_count = len(kept)

    def block(self, request: Request) -> EnvBlock:
        """The variables for `request` (base ones last), as the one environment block
        the engines take. Raises BadRequest when the request has a NUL byte where a
        variable's value comes from."""
        path = request.path
        if "\0" in path:
            raise BadRequest("the request path contains a NUL byte")
        prefix = self._prefix
        path_bytes = path.encode()
        # The route matched, so `path` starts with the prefix: an ASCII prefix is as many
        # bytes as characters, and the bytes after it are PATH_INFO.
        path_info = path_bytes[self._prefix_length:] if self._ascii_prefix \
            else path[len(prefix):].encode()
        raw = request.raw_path
        raw_info = (raw[len(prefix):] if raw.isascii() else _text(raw[len(prefix):])) \
            if raw and raw.startswith(self._prefix_bytes) else path_info
        # One pass over the headers: the Host header and the HTTP_* variables.
        host_header: bytes | None = None
        connection: bytes | None = None
        extra: dict[bytes, bytes] = {}
        keys = self._keys
        for name, value in request.headers:
            if name == b"host" and host_header is None:
                host_header = value
            key = keys.get(name)
            if key is None:
                key = self._header_key(name)
            if not key:
                if name == b"connection":  # only among the headers not passed
                    connection = value if connection is None else connection + b"," + value
                continue
            if not value.isascii():
                value = value.decode("latin-1").encode()
            if key in extra and key != b"CONTENT_TYPE":
                value = extra[key] + b", " + value
            extra[key] = value
        if connection is not None and extra \
                and connection.lower() not in _CONNECTION_OPTIONS:
            self._drop_connection_options(connection, extra, request.headers)
        server = self._server(host_header, request.server)
        query = request.query.encode()
        # The URL as sent: from the decoded path, `/a%3Fb=1` would read as a query.
        target = _text(raw) if raw else path_bytes
        body = request.body
        scheme = _SCHEMES.get(request.scheme) or request.scheme.encode()
        values = [
            b"CGI/1.1", _SOFTWARE, _PROTOCOLS.get(request.http_version)
            or b"HTTP/" + request.http_version.encode(), server[1], server[2],
            _METHODS.get(request.method) or request.method.encode(), self._prefix_bytes,
            path_info, path_info, query, b"%d" % len(body) if body else b"0",
            request.client[0].encode() if request.client else b"", self._matched, raw_info,
            b"%s://%s%s?%s" % (scheme, server[0], target, query)
            if query else b"%s://%s%s" % (scheme, server[0], target),
            *extra.values(), b"",
        ]
        count = len(_FIXED) + len(extra) + self._base_count
        names = _FIXED_NAMES + b"".join([key + b"\0" for key in extra]) + self._base_names \
            if extra else _FIXED_NAMES + self._base_names
        joined = b"\0".join(values) + self._base_values
        if joined.count(b"\0") != count:
            raise BadRequest("a request header contains a NUL byte")
        return EnvBlock(names, joined, count)

    def _drop_connection_options(self, connection: bytes, extra: dict[bytes, bytes],
                                 headers: Headers) -> None:
        """Drop from `extra` the `HTTP_*` variables of the headers `connection` names:
        they were for the hop to the gateway only (RFC 9110 7.6.1), such as a credential
        a proxy in front would have removed. At most `MAX_CONNECTION_OPTIONS` names
        (400 past them), each looked up only when the request sent that header: 16,000
        names in one 64 KiB header cost 30 ms of the worker per request, and churned the
        header-name cache."""
        options = connection.split(b",")
        if len(options) > MAX_CONNECTION_OPTIONS:
            raise BadRequest(f"the Connection header names more than "
                             f"{MAX_CONNECTION_OPTIONS} options")
        sent = {name for name, _ in headers}
        for option in options:
            name = option.strip().lower()
            if name in sent:
                key = self._keys.get(name)
                if key is None:
                    key = self._header_key(name)
                if key.startswith(b"HTTP_"):  # never CONTENT_TYPE: the body's, not the hop's
                    extra.pop(key, None)

    def _server(self, host_header: bytes | None,
                server: tuple[str, int | None] | None) -> tuple[bytes, bytes, bytes]:
        """(host, SERVER_NAME, SERVER_PORT) of a request, remembered per (Host header,
        listening address): one answer for every request a client sends alike."""
        key = (host_header, server)
        known = self._servers.get(key)
        if known is None:
            server_host, server_port = server or ("", None)
            if host_header:
                host = _text(host_header)
            else:  # an IPv6 address is bracketed in a URL and in SERVER_NAME (RFC 3875)
                host = (f"[{server_host}]" if ":" in server_host else server_host).encode()
            # Less the port: `[::1]:8080` is `[::1]` (its colons are the address's).
            name = host[:host.index(b"]") + 1] if host.startswith(b"[") and b"]" in host \
                else host.rsplit(b":", 1)[0] if host.count(b":") == 1 else host
            port = b"" if server_port is None else str(server_port).encode()
            known = (host, name, port)
            if host_header is None or len(host_header) <= _CACHED_KEY_MAX:
                if len(self._servers) >= _HEADER_KEYS_MAX:  # Host comes from clients
                    self._servers.clear()
                self._servers[key] = known
        return known

    def pairs(self, request: Request) -> tuple[tuple[str, str], ...]:
        """The same variables as text (name, value) pairs."""
        names, values, _ = self.block(request)
        return tuple(zip(names.decode().split("\0")[:-1], values.decode().split("\0")[:-1],
                         strict=True))

    def _header_key(self, name: bytes) -> bytes:
        """The variable for header `name` (b"" when withheld or not a valid name)."""
        key = b"HTTP_" + name.upper().replace(b"-", b"_") \
            if self._rules.passes_request(name) else b""
        if key and not _ENV_NAME.match(key):
            key = b""
        if len(name) <= _CACHED_KEY_MAX:
            if len(self._keys) >= _HEADER_KEYS_MAX:  # names come from clients
                self._keys = dict(_SPECIAL_HEADERS)
            self._keys[name] = key
        return key


def cgi_environ(request: Request, route: str,
                rules: HeaderRules = DEFAULT_RULES) -> tuple[tuple[str, str], ...]:
    """The CGI variables for `request` routed at prefix `route`, as text pairs. Raises
    BadRequest when the path cannot be passed (a NUL byte)."""
    return CgiEnvironment(route, (), rules).pairs(request)


def _text(value: bytes) -> bytes:
    """Header bytes as UTF-8 text: ASCII as it is, other bytes read as Latin-1."""
    return value if value.isascii() else value.decode("latin-1").encode()


def parse_output(stdout: bytes, max_body: int, max_header: int,
                 rules: HeaderRules = DEFAULT_RULES) -> Response:
    """The response a function wrote, its headers filtered by `rules`. Raises BadGateway
    when there is no header block within `max_header` bytes, a header is malformed, the
    status is not 200-599, or the body exceeds `max_body`."""
    end, gap = _header_end(stdout, max_header)
    block = stdout[:end]
    # A function writes the same header block on most requests: parse each block once
    # per function. Keys are the exact bytes, so a cached answer is the answer.
    cache = rules.parsed
    parsed: _Parsed | None = cache.get(block)  # type: ignore[assignment]
    if parsed is None:
        status, raw = _parse_headers(block)
        kept = rules.response(list(raw))
        parsed = status, tuple(kept), header_lines(kept)
        if len(block) <= _CACHED_BLOCK_MAX:  # the output of a guest: bounded in bytes too
            if len(cache) >= _PARSED_MAX:
                cache.clear()
            cache[block] = parsed
    status, headers, lines = parsed
    body = stdout[end + gap:]
    if len(body) > max_body:
        raise BadGateway(f"the function's response body is larger than {format_size(max_body)}")
    return Response(status, list(headers), b"" if status in NO_BODY_STATUSES else body, lines)


# (status, headers, the same as checked header lines)
_Parsed = tuple[int, tuple[tuple[bytes, bytes], ...], bytes]
_PARSED_MAX = 256  # header blocks remembered per function (a function writes a few)
_CACHED_BLOCK_MAX = 4096  # bytes of a header block remembered (held three times over)


def _parse_headers(block: bytes) -> tuple[int, tuple[tuple[bytes, bytes], ...]]:
    """(status, headers) of a CGI header block. Raises BadGateway for a malformed one."""
    lines = block.split(b"\n")
    if len(lines) > MAX_HEADER_LINES:
        raise BadGateway(f"the function wrote more than {MAX_HEADER_LINES} CGI header lines")
    status: int | None = None
    location = False
    headers: Headers = []
    for line in lines:
        name, sep, value = line.rstrip(b"\r").partition(b":")
        value = value.strip()
        if not sep or not _TOKEN.match(name) or FORBIDDEN_IN_VALUE.search(value):
            raise BadGateway("the function wrote a malformed CGI header line")
        key = name.lower()
        if key == b"status":
            if status is not None:  # which one the function meant is unknown
                raise BadGateway("the function wrote more than one Status header")
            status = _status(value)
        else:
            location = location or key == b"location"
            headers.append((key, value))
    if status is None:
        if not headers:
            raise BadGateway("the function's CGI header block is empty")
        status = 302 if location else 200
    return status, tuple(headers)


def _header_end(stdout: bytes, max_header: int) -> tuple[int, int]:
    """(end of the header block, length of the separator)."""
    lf = stdout.find(b"\n\n", 0, max_header + 2)
    crlf = stdout.find(b"\r\n\r\n", 0, max_header + 4)
    if lf < 0 and crlf < 0:
        if not stdout:
            raise BadGateway("the function wrote nothing (a CGI response needs headers)")
        if b"\n\n" in stdout or b"\r\n\r\n" in stdout:  # past the allowance
            raise BadGateway(f"the function's CGI header block is larger than "
                             f"{format_size(max_header)}")
        raise BadGateway("the function wrote no CGI header block (header lines, then an "
                         "empty line, then the body)")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2


def _status(value: bytes) -> int:
    """The status a `Status` header sets. Raises BadGateway unless it is 200-599."""
    code = value.split(b" ", 1)[0]
    if len(code) != 3 or not code.isdigit():
        raise BadGateway("the function wrote an invalid Status header")
    if not 200 <= int(code) <= 599:
        raise BadGateway(f"the function wrote Status {int(code)}: a function answers with a "
                         "final status, 200 to 599")
    return int(code)

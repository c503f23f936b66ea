"""WAGI-style CGI over WASI: a request as environment variables, stdout as a response.

In: `REQUEST_METHOD`, `PATH_INFO` (the path after the route), `SCRIPT_NAME` (the route),
`QUERY_STRING`, `CONTENT_LENGTH`, `CONTENT_TYPE` (when sent), `HTTP_*` per header,
`SERVER_*`, `REMOTE_ADDR`, and WAGI's `X_MATCHED_ROUTE`, `X_FULL_URL`, `X_RAW_PATH_INFO`;
the body goes to standard input. Unset rather than empty: `AUTH_TYPE` (credentials are
never passed), `CONTENT_TYPE` without one.

Out: header lines, an empty line, the body. `Status` sets the status (default 200; 302
with only `Location`), other headers pass through except hop-by-hop ones and
`Content-Length`, which the gateway sets.
"""

from __future__ import annotations

import re

from ..policy import format_size
from .messages import Headers, Request, Response
from .problem import BadGateway, BadRequest

__all__ = ["cgi_environ", "parse_output", "MAX_HEADER_LINES", "SERVER_SOFTWARE"]

SERVER_SOFTWARE = "Stockade"
MAX_HEADER_LINES = 100
# Never passed to functions: credentials (CGI/1.1, RFC 3875 4.1.18) and `Proxy`, which
# would become HTTP_PROXY (httpoxy).
_WITHHELD = {b"authorization", b"proxy-authorization", b"proxy"}
_ENV_NAME = re.compile(r"^[A-Z0-9_]+$")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DROPPED = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade",
            b"te", b"trailer", b"proxy-connection"}
_NO_BODY = (204, 304)


def cgi_environ(request: Request, route: str) -> tuple[tuple[str, str], ...]:
    """The CGI variables for `request` routed at prefix `route`. Raises BadRequest when
    the path cannot be passed (a NUL byte)."""
    if "\0" in request.path:
        raise BadRequest("the request path contains a NUL byte")
    prefix = "" if route == "/" else route
    path_info = request.path[len(prefix):]
    raw = request.raw_path or request.path.encode()
    raw_info = raw[len(prefix):].decode("latin-1") if raw.startswith(prefix.encode()) \
        else path_info
    host_header = request.header(b"host")
    server_host, server_port = request.server or ("", None)
    host = host_header.decode("latin-1") if host_header else server_host
    server_name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    query = request.query
    env: dict[str, str] = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
        "SERVER_NAME": server_name,
        "SERVER_PORT": "" if server_port is None else str(server_port),
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": prefix,
        "PATH_INFO": path_info,
        "PATH_TRANSLATED": path_info,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(request.body)),
        "REMOTE_ADDR": request.client[0] if request.client else "",
        "X_MATCHED_ROUTE": prefix + "/...",
        "X_RAW_PATH_INFO": raw_info,
        "X_FULL_URL": f"{request.scheme}://{host}{request.path}" + (f"?{query}" if query
                                                                     else ""),
    }
    for name, value in request.headers:
        if name in _WITHHELD:
            continue
        text = value.decode("latin-1")
        if name == b"content-type":
            env["CONTENT_TYPE"] = text
            continue
        if name == b"content-length":
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if _ENV_NAME.match(key):
            env[key] = f"{env[key]}, {text}" if key in env else text
    return tuple(env.items())


def parse_output(stdout: bytes, max_body: int, max_header: int) -> Response:
    """The response a function wrote. Raises BadGateway when there is no header block
    within `max_header` bytes, a header is malformed, or the body exceeds `max_body`."""
    end, gap = _header_end(stdout, max_header)
    block = stdout[:end]
    parsed = _PARSED.get(block)
    if parsed is None:
        parsed = _parse_headers(block)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[block] = parsed
    status, headers = parsed
    body = stdout[end + gap:]
    if len(body) > max_body:
        raise BadGateway(f"the function's response body is larger than {format_size(max_body)}")
    return Response(status, list(headers), b"" if status in _NO_BODY else body)


# A function writes the same header block on most requests: parse each block once.
# Keys are the exact bytes, so a cached answer is the answer; bounded by clearing.
_PARSED: dict[bytes, tuple[int, tuple[tuple[bytes, bytes], ...]]] = {}
_PARSED_MAX = 1024


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
        if not sep or not _TOKEN.match(name) or _CONTROL.search(value):
            raise BadGateway("the function wrote a malformed CGI header line")
        key = name.lower()
        if key == b"status":
            status = _status(value)
        elif key not in _DROPPED:
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
        raise BadGateway("the function wrote no CGI header block (header lines, then an "
                         "empty line, then the body)")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2


def _status(value: bytes) -> int:
    code = value.split(b" ", 1)[0]
    if not code.isdigit() or not 100 <= int(code) <= 599 or len(code) != 3:
        raise BadGateway("the function wrote an invalid Status header")
    return int(code)

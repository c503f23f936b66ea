"""`Response` and `Headers`: the leaf the gateway's messages and problems share.

Headers are lists of `(name, value)` byte pairs, names lower-case. `messages.py`
re-exports both beside `Request`; `problem.py` builds its responses from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Response", "Headers", "framing", "header_lines", "FORBIDDEN_IN_VALUE",
           "NO_BODY_STATUSES"]

Headers = list[tuple[bytes, bytes]]
# What HTTP forbids in a header name (beyond a token's characters) and value (RFC 9110 5).
_BAD_NAME = re.compile(rb'[\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]')
FORBIDDEN_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9110 8.6: no body and no Content-Length on 204; 304's would describe GET's.
NO_BODY_STATUSES = (204, 304)


@dataclass(slots=True)
class Response:
    """One HTTP response; `content-length` is added by the adapter. `lines`, when set,
    are `headers` already written as checked header lines (`header_lines`): a function's
    parsed response, the same on most of its requests, is not checked again each time."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    lines: bytes | None = None


def header_lines(headers: Headers) -> bytes:
    """`headers` as HTTP/1.1 header lines (`name: value`, names lower-case). Raises
    RuntimeError for a name or value HTTP forbids, as uvicorn's `send` does."""
    lines: list[bytes] = []
    for name, value in headers:
        if _BAD_NAME.search(name) or FORBIDDEN_IN_VALUE.search(value):
            raise RuntimeError("Invalid HTTP header name or value.")
        lines += (name.lower(), b": ", value, b"\r\n")
    return b"".join(lines)


def framing(response: Response, head: bool) -> tuple[bytes | None, bytes]:
    """(the `content-length` value, None for a status without one; the body to send,
    empty for HEAD and for 204 and 304)."""
    if response.status in NO_BODY_STATUSES:
        return None, b""
    body = response.body
    return b"%d" % len(body), b"" if head else body

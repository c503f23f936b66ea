"""HTTP errors of the gateway and their `application/problem+json` bodies (RFC 9457).

Each error class carries its status and problem type, so layers raise and the error
layer renders::

    StockadeError
    └── HttpProblem                 500  internal-error
        ├── BadRequest              400  bad-request
        ├── Forbidden               403  denied
        ├── NotFound                404  not-found
        ├── MethodNotAllowed        405  method-not-allowed  (Allow)
        ├── RequestTimeout          408  request-timeout     (Connection: close)
        ├── PayloadTooLarge         413  payload-too-large   (Connection: close)
        ├── TooManyRequests         429  too-many-requests   (Retry-After)
        ├── BadGateway              502  bad-gateway
        ├── Unavailable             503  unavailable         (Retry-After)
        └── GatewayTimeout          504  timeout

Details never carry host paths: `scrub` reduces any absolute path to its last part.
"""

from __future__ import annotations

import json
import math
import re

from ..errors import StockadeError
from .response import Headers, Response

__all__ = [
    "HttpProblem",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RequestTimeout",
    "TooManyRequests",
    "BadGateway",
    "Unavailable",
    "GatewayTimeout",
    "problem_response",
    "render_error",
    "scrub",
]

PROBLEM_TYPE = "application/problem+json"
# An absolute or home-relative path starts at the start of the text, after white space,
# a quote, an opening bracket, '=' or ','. Host paths may hold spaces, '=', commas, ': '
# and any letter, so no character inside one can end it: it runs to the end of the
# line, a quote or a bracket, and everything up to its last '/' goes.
_PATH = re.compile(r"""(?<![^\s'"(\[<=,])~?/(?!/)[^\n'"()\[\]<>]*""")


def scrub(text: str) -> str:
    """`text` with host paths (two or more segments) reduced to what follows their last
    `/`: `cannot open /srv/my dir/a.wasm: denied` becomes `cannot open a.wasm: denied`."""
    return _PATH.sub(_last_part, text)


def _last_part(match: re.Match[str]) -> str:
    path = match.group(0)
    trimmed = path.rstrip("/")
    if "/" not in trimmed[1:]:
        return path  # `/hello`: a route, not a host path
    return trimmed.rsplit("/", 1)[-1]


class HttpProblem(StockadeError):
    """An error that becomes an HTTP problem response; `headers` are added to it."""

    http_status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, *, headers: Headers | None = None,
                 **extra: str | int | float | None) -> None:
        super().__init__(detail)
        self.headers: Headers = list(headers or [])
        self.extra = {k: v for k, v in extra.items() if v is not None}


class BadRequest(HttpProblem):
    """The request cannot be passed to a function (e.g. a NUL byte in the path)."""

    http_status, slug, title = 400, "bad-request", "Bad request"


class Forbidden(HttpProblem):
    """The function's module is denied (it imports what Stockade does not provide)."""

    http_status, slug, title = 403, "denied", "Module denied"


class NotFound(HttpProblem):
    """No function is routed at this path."""

    http_status, slug, title = 404, "not-found", "No such function"


class MethodNotAllowed(HttpProblem):
    """The function does not accept this method; `Allow` lists those it does."""

    http_status, slug, title = 405, "method-not-allowed", "Method not allowed"

    def __init__(self, detail: str, allowed: tuple[str, ...]) -> None:
        super().__init__(detail, headers=[(b"allow", ", ".join(allowed).encode())])


class PayloadTooLarge(HttpProblem):
    """The request body is larger than the function accepts; the connection is closed
    after the answer: the rest of the body is never read (parsed on, it was taken for
    the next request's head and answered a second time)."""

    http_status, slug, title = 413, "payload-too-large", "Request body too large"

    def __init__(self, detail: str, **extra: str | int | float | None) -> None:
        super().__init__(detail, headers=[(b"connection", b"close")], **extra)


class RequestTimeout(HttpProblem):
    """The client sent its request body too slowly; the connection is closed after the
    answer (the rest of the body is never read)."""

    http_status, slug, title = 408, "request-timeout", "Request timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=[(b"connection", b"close")])


MAX_RETRY_AFTER = 86_400  # seconds a Retry-After may ask for


class _RetryLater(HttpProblem):
    def __init__(self, detail: str, retry_after: float, **extra: str | int | float | None) -> None:
        # Bounded: a wait of days is no advice, and ceil() of an infinite one raised.
        bounded = retry_after if retry_after < MAX_RETRY_AFTER else MAX_RETRY_AFTER  # NaN too
        seconds = max(1, math.ceil(bounded))
        super().__init__(detail, headers=[(b"retry-after", str(seconds).encode())],
                         retry_after=seconds, **extra)


class TooManyRequests(_RetryLater):
    """A concurrency, rate or CPU quota of the function or its tenant is used up, or
    this client's requests keep making the function hit a limit (`clientbreaker.py`)."""

    http_status, slug, title = 429, "too-many-requests", "Too many requests"


class Unavailable(_RetryLater):
    """The worker's queue is full, the server is draining, or the breaker is open."""

    http_status, slug, title = 503, "unavailable", "Service unavailable"


class BadGateway(HttpProblem):
    """The function trapped, hit a limit, or wrote an invalid CGI response."""

    http_status, slug, title = 502, "bad-gateway", "Function failed"


class GatewayTimeout(HttpProblem):
    """The function ran out of time."""

    http_status, slug, title = 504, "timeout", "Function timed out"


def problem_response(status: int, slug: str, title: str, detail: str, instance: str = "",
                     headers: Headers | None = None,
                     extra: dict[str, str | int | float] | None = None) -> Response:
    """A problem+json response; `detail` is scrubbed of host paths (`instance` is the
    request's own path)."""
    body: dict[str, str | int | float] = {
        "type": f"urn:stockade:problem:{slug}", "title": title, "status": status,
        "detail": scrub(detail),
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return Response(status, [(b"content-type", PROBLEM_TYPE.encode()), *(headers or [])],
                    json.dumps(body).encode())


def render_error(exc: BaseException, instance: str = "") -> Response:
    """The response for any exception: its own status for Stockade errors (the class
    decides), a generic 500 otherwise (the detail would leak internals)."""
    if isinstance(exc, HttpProblem):
        return problem_response(exc.http_status, exc.slug, exc.title, exc.message, instance,
                                exc.headers, exc.extra)
    if isinstance(exc, StockadeError):
        slug = re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()
        return problem_response(exc.http_status, slug, "Function cannot run", exc.message,
                                instance)
    return problem_response(500, "internal-error", "Internal error",
                            "the gateway failed to handle this request", instance)

"""The access log: one line per request on the ``stockade.access`` logger.

`[server] access_log` picks the format:

- ``common``: Apache's Common Log Format,
  ``127.0.0.1 - - [02/Dec/2026:04:32:37 +0000] "GET /hello?x=1 HTTP/1.1" 200 20``;
- ``json``: one object a line with the same facts and the function, tenant, outcome,
  invocation id (the run's telemetry span) and duration in milliseconds;
- ``off``.

Clients choose the request line: in ``common`` it is the path as sent (still
percent-encoded), with quotes and backslashes escaped and bytes past ASCII and control
characters shown as ``\\xNN`` as Apache does (`display.printable`); ``json`` is ASCII-only
JSON, so no byte of it can reach a terminal raw.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from ..display import printable
from .messages import Request, Response

if TYPE_CHECKING:
    from ..result import Result
    from .registry import Route

__all__ = ["AccessLog", "access_logger", "common_line", "json_line"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")


def access_logger() -> logging.Logger:
    """The ``stockade.access`` logger writing bare lines to stderr (no prefix: a line is
    the format's own), set up once per process."""
    log = logging.getLogger("stockade.access")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    # `serve --quiet` (warnings only) keeps the access log quiet too.
    log.setLevel(max(logging.INFO, logging.getLogger("stockade").getEffectiveLevel()))
    return log


def _target(request: Request) -> str:
    """The request target as sent (raw path and query), one character per byte."""
    path = request.raw_path.decode("latin-1") if request.raw_path \
        else request.path.encode("utf-8", "surrogateescape").decode("latin-1")
    return f"{path}?{request.query}" if request.query else path


def _ascii(target: str) -> str:
    """A one-character-per-byte text with bytes past ASCII as ``\\xNN``."""
    return target.encode("latin-1", "replace").decode("ascii", "backslashreplace")


def _clf_time(when: float) -> str:
    local = time.localtime(when)
    offset = local.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset) // 60
    return (f"{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:"
            f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} "
            f"{sign}{offset // 60:02d}{offset % 60:02d}")


def _quoted(text: str) -> str:
    return printable(_ascii(text.replace("\\", "\\\\").replace('"', '\\"')))


def common_line(request: Request, response: Response, when: float) -> str:
    """The Common Log Format line of a request answered at `when` (epoch seconds)."""
    client = request.client[0] if request.client else "-"
    size = len(response.body) if request.method != "HEAD" and response.body else "-"
    line = f"{request.method} {_target(request)} HTTP/{request.http_version}"
    return (f"{printable(client)} - - [{_clf_time(when)}] \"{_quoted(line)}\" "
            f"{response.status} {size}")


def json_line(request: Request, response: Response, when: float, duration: float) -> str:
    """The JSON line of a request answered at `when` after `duration` seconds."""
    route: Route | None = request.state.get("route")
    result: Result | None = request.state.get("result")
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
        + f".{int(when % 1 * 1000):03d}Z",
        "client": request.client[0] if request.client else None,
        "method": request.method, "target": _ascii(_target(request)),
        "protocol": f"HTTP/{request.http_version}", "status": response.status,
        "bytes": 0 if request.method == "HEAD" else len(response.body),
        "duration_ms": round(duration * 1000, 3),
        "function": route.spec.name if route else None,
        "tenant": route.spec.tenant if route else None,
        "outcome": result.outcome.value if result else None,
        "invocation_id": request.state.get("invocation_id"),
    }
    error = request.state.get("error")
    if error is not None:
        record["error"] = error
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class AccessLog:
    """Logs every request once answered, in `style` (``common`` or ``json``)."""

    def __init__(self, style: str) -> None:
        self.json = style == "json"
        self.log = access_logger()

    def write(self, request: Request, response: Response, start: float) -> None:
        """The line of `request`, answered with `response`, received at `start`
        (`time.perf_counter()`)."""
        if not self.log.isEnabledFor(logging.INFO):  # `serve -q`: no line to format
            return
        now = time.time()
        line = json_line(request, response, now, time.perf_counter() - start) if self.json \
            else common_line(request, response, now)
        self.log.info(line)

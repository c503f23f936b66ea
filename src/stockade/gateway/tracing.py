"""W3C Trace Context for the gateway: `traceparent` in, a server span per request.

`TraceContext.from_headers` parses the request's `traceparent` (a malformed one is
ignored, as the W3C spec says, and a new trace starts). `Tracer` keeps the context in
`request.state["trace"]` for the invocation span and hands the finished server span to a
`SpanRecorder` (the telemetry pipeline), never raising into a request.

Sampling is decided once, at the head. A caller among `[server] trusted_proxies` is
continued, its sampled flag followed; any other caller's trace context is not believed
and a trace starts here (a client that set the flag, or chose trace ids the ratio keeps,
had every request recorded: the file sink's history of violations was rotated away by a
flood of its spans; continuing its trace id let a `traceidratio` sampler keep it). A
trace that starts here is sampled by the recorder's ratio; the server span of a
sampled one links to the client's span (`linked`, an OTel span link), so the client's
trace and the gateway's can still be found from each other. The invocation span inherits the
decision as its parent (`as_parent`), so a trace is kept or dropped whole, and an
unsampled request builds no span at all.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from ..telemetry.record import ParentContext
from .forwarded import TrustedProxies
from .messages import Request, Response, header

__all__ = ["TraceContext", "Tracer", "SpanRecorder", "ServerSpan"]

logger = logging.getLogger("stockade.gateway")
_SPAN_MASK = (1 << 64) - 1
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class TraceContext(NamedTuple):
    """The trace a request belongs to: `trace_id`, the caller's span (`parent_id`, 0 when
    the trace starts here), the server span's own id, the caller's sampled flag (None
    when there was no caller), and an untrusted caller's (trace id, span id) the server
    span links to (None: none). A named tuple: one is made per request."""

    trace_id: int
    parent_id: int
    span_id: int
    sampled: bool | None
    linked: tuple[int, int] | None = None

    @classmethod
    def from_headers(cls, traceparent: bytes | None,
                     sample: Callable[[int], bool] | None = None,
                     trusted: bool = True) -> TraceContext:
        """Continue the caller's trace when `trusted` (see the module docstring), or
        start one, sampled when `sample(trace_id)` says so (None: undecided, left to
        whoever records the spans), linked to an untrusted caller's span."""
        bits = random.getrandbits(192)  # a span id, and a trace id should one start here
        span_id = bits & _SPAN_MASK or 1
        linked = None
        if traceparent:
            # Its first 55 bytes, the version-00 form (a client's header may be KiBs).
            match = _TRACEPARENT.match(traceparent.lstrip()[:55].lower())
            if match and match.group(1) != b"ff":
                trace_id, parent_id = int(match.group(2), 16), int(match.group(3), 16)
                if trace_id and parent_id:
                    if trusted:
                        return cls(trace_id, parent_id, span_id,
                                   bool(int(match.group(4), 16) & 1))
                    linked = (trace_id, parent_id)
        trace_id = bits >> 64 or 1
        return cls(trace_id, 0, span_id, None if sample is None else sample(trace_id),
                   linked)

    def as_parent(self) -> ParentContext:
        """This server span as the parent of the invocation it runs (sampled unless the
        decision was no)."""
        return ParentContext(self.trace_id, self.span_id, self.sampled is not False)


class ServerSpan(NamedTuple):
    """A finished HTTP server span: the trace context, route, method, status, times in ns
    since the epoch."""

    context: TraceContext
    method: str
    route: str
    target: str
    status: int
    start_ns: int
    end_ns: int
    function: str | None


class SpanRecorder(Protocol):
    """Receives finished server spans (the telemetry pipeline implements it)."""

    def samples(self, trace_id: int) -> bool:
        """Whether a trace starting here with this id is sampled."""

    def record_server_span(self, span: ServerSpan) -> None: ...


class Tracer:
    """Extracts the trace context of each request and records its server span in
    `recorder` (the gateway's `Pipeline` calls `begin` first and `end` last)."""

    def __init__(self, recorder: SpanRecorder, proxies: TrustedProxies | None = None) -> None:
        self.recorder = recorder
        self._sample = recorder.samples
        self._proxies = proxies  # callers whose trace context is continued

    def begin(self, request: Request) -> int:
        """Keep the request's trace context in `request.state["trace"]`; the span's start
        (ns since the epoch), or 0 when the trace is not sampled (no span: no clock read,
        no record)."""
        traceparent = header(request.headers, b"traceparent")
        proxies = self._proxies
        # A client's is not believed, only linked to (see the module docstring).
        trusted = traceparent is None or (proxies is not None and request.client is not None
                                          and proxies.trusts(request.client[0]))
        context = TraceContext.from_headers(traceparent, self._sample, trusted)
        request.state["trace"] = context
        return 0 if context.sampled is False else time.time_ns()

    def end(self, request: Request, response: Response, start: int) -> None:
        """Record the server span of `request` begun at `start` (never raises)."""
        route = request.state.get("route")
        span = ServerSpan(request.state["trace"], request.method,
                          route.spec.route if route else "", request.path, response.status,
                          start, time.time_ns(), route.spec.name if route else None)
        try:
            self.recorder.record_server_span(span)
        except Exception:  # noqa: BLE001 - telemetry never breaks a request
            logger.warning("could not record the server span", exc_info=True)

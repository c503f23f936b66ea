"""The gateway's handler stack, one small layer per concern, each wrapping the next::

    AccessLogLayer      one line per request (accesslog.py; unless access_log = "off")
    └── MetricsLayer    requests and durations by function and status
        └── TracingLayer    W3C trace context in, a server span out (tracing.py)
            └── FunctionLogLayer    function stderr and failure reasons (funclog.py)
                └── ErrorLayer  any exception -> problem+json (status from its class)
                    └── RoutingLayer    /healthz, /readyz, /metrics; else the route
                        └── BodyLayer   the whole body: deadline 408, size 413, budget 503
                            └── LimitsLayer quotas (429), shared state (503)
                                └── Invoker (invoke.py)  CGI in, guest run, CGI out

The body is read before any slot is taken: a client that sends it slowly holds a
connection, never a function's or a tenant's concurrency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import StockadeError
from .bodybudget import BodyBudget
from .limits import admit
from .messages import Handler, Request, Response
from .problem import HttpProblem, MethodNotAllowed, NotFound, render_error

if TYPE_CHECKING:
    from .metrics import Labels, Metrics
    from .registry import Registry, Route
    from .settings import ServerSettings

__all__ = ["MetricsLayer", "ErrorLayer", "RoutingLayer", "BodyLayer", "LimitsLayer",
           "NO_ROUTE", "GATEWAY"]

logger = logging.getLogger("stockade.gateway")
NO_ROUTE = (("function", ""), ("tenant", ""))
GATEWAY = (("function", "_gateway"), ("tenant", ""))  # /healthz, /readyz, /metrics


class MetricsLayer:
    """Counts every response by function, tenant and status; times it per function."""

    def __init__(self, app: Handler, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # (labels, status) -> the counter's labels: one tuple per series, not per request.
        self._series: dict[tuple[Labels, int], tuple[Labels, Labels]] = {}

    async def __call__(self, request: Request) -> Response:
        start = time.perf_counter()
        response = await self.app(request)
        route: Route | None = request.state.get("route")
        labels = route.labels if route is not None else request.state.get("labels", NO_ROUTE)
        key = (labels, response.status)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= 4096:  # bounded: labels come from the manifest
                self._series.clear()
            series = self._series[key] = ((*labels, ("code", str(response.status))),
                                          labels[:1])
        self.metrics.inc("stockade_gateway_requests_total", series[0])
        self.metrics.observe("stockade_gateway_request_duration_seconds", series[1],
                             time.perf_counter() - start)
        return response


class ErrorLayer:
    """Renders errors as problem+json; counts refusals (408, 413, 429, 503) by reason. An
    unexpected exception is logged and answered 500 without its details."""

    def __init__(self, app: Handler, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, request: Request) -> Response:
        try:
            return await self.app(request)
        except StockadeError as exc:
            request.state["error"] = exc.message  # the reason, for the logs (funclog.py)
            if isinstance(exc, HttpProblem) and exc.http_status in (408, 413, 429, 503):
                route: Route | None = request.state.get("route")
                reason = str(exc.extra.get("limit") or exc.extra.get("reason") or exc.slug)
                self.metrics.inc("stockade_gateway_rejections_total",
                                 (*(route.labels if route else NO_ROUTE), ("reason", reason)))
            return render_error(exc, request.path)
        except Exception as exc:
            logger.exception("request %s %s failed", request.method, request.path)
            request.state["error"] = "internal error (see the traceback above)"
            return render_error(exc, request.path)


SystemHandler = Callable[[Request], Awaitable[Response]]


class RoutingLayer:
    """Answers the gateway's own endpoints, then finds the function for the path (404),
    checks the method (405) and passes on with `request.state["route"]` set."""

    def __init__(self, app: Handler, registry: Registry,
                 system: Mapping[str, SystemHandler]) -> None:
        self.app = app
        self.registry = registry
        self.system = system

    async def __call__(self, request: Request) -> Response:
        handler = self.system.get(request.path)
        if handler is not None:
            request.state["labels"] = GATEWAY
            return await handler(request)
        route = self.registry.routes.match(request.path)
        if route is None:
            raise NotFound("no function is routed at this path")
        if not route.spec.allows(request.method):
            raise MethodNotAllowed(f"function {route.spec.name} does not accept "
                                   f"{request.method}", route.spec.methods)
        request.state["route"] = route
        return await self.app(request)


class BodyLayer:
    """Reads the routed function's request body (at most its `max_body`) before the
    layers below take slots: the body must arrive within `body_timeout` seconds plus
    one second per `body_min_rate` bytes received, else 408 and the connection closes.
    The bytes held count against the worker's `BodyBudget` (503 past it) until the
    response is ready."""

    def __init__(self, app: Handler, settings: ServerSettings) -> None:
        self.app = app
        self.timeout = settings.body_timeout
        self.min_rate = settings.body_min_rate
        self.budget = BodyBudget(settings.body_buffer, settings.body_buffer_per_client)

    async def __call__(self, request: Request) -> Response:
        route: Route = request.state["route"]
        client = request.client[0] if request.client else ""
        budget, held = self.budget, 0

        def charge(size: int) -> None:
            nonlocal held
            budget.take(client, size)
            held += size

        try:
            await request.read_body(route.spec.max_body, self.timeout, self.min_rate, charge)
            return await self.app(request)
        finally:
            if held:  # most requests have no body: nothing was charged
                budget.give(client, held)


class LimitsLayer:
    """Takes the function's and the tenant's slots through the route's gate (429 when
    either is spent, 503 for an open breaker or unavailable shared state) and returns
    them after the response, charging the guest's CPU time."""

    def __init__(self, app: Handler, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, request: Request) -> Response:
        route: Route = request.state["route"]
        lease = await admit(route.gate)
        if lease.degraded:  # decided by this replica alone: shared state unavailable
            self.metrics.inc("stockade_gateway_state_fallbacks_total", route.labels)
        if lease.probe:  # the breaker's probe: freed by the Invoker if it never runs
            request.state["probe"] = True
        self.metrics.add("stockade_gateway_inflight", route.labels, 1)
        try:
            return await self.app(request)
        finally:
            lease.release(float(request.state.get("cpu_seconds", 0.0)))
            self.metrics.add("stockade_gateway_inflight", route.labels, -1)

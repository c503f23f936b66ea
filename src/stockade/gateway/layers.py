"""`Pipeline`: the gateway's handler, every concern of a request in one coroutine.

Each request passes these concerns, in this order (each a small part kept in its own
module where it has state of its own); an outer one sees whatever an inner one
answered or raised::

    access log      one line per request (accesslog.py; unless access_log = "off")
    metrics         requests and durations by function and status
    tracing         W3C trace context in, a server span out (tracing.py)
    function log    function stderr and failure reasons (funclog.py)
    errors          any exception -> problem+json (status from its class)
    routing         /healthz, /readyz, /metrics; else the route (404, 405; 400 for
                    a dot segment, an encoded slash or an encoded route:
                    reqpath.ambiguous_path, reqpath.encoded_route)
    body            the whole body: deadline 408, size 413, budget 503 (requestbudget.py)
    client breaker  a client whose runs keep hitting limits (429, clientbreaker.py)
    limits          quotas (429), shared state (503) (limits.py)
    Invoker         CGI in, guest run, CGI out (invoke.py)

One coroutine, not one wrapping coroutine per concern: a layer's frame, its await and
its `request.state` look-ups cost about a microsecond each on every request.

The body is read before any slot is taken: a client that sends it slowly holds a
connection, never a function's or a tenant's concurrency.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import StockadeError
from .funclog import FunctionLog
from .limits import admit, admit_now
from .messages import Handler, Request, Response
from .metrics import BUCKETS
from .problem import BadRequest, HttpProblem, MethodNotAllowed, NotFound, render_error
from .reqpath import ambiguous_path, encoded_route
from .requestbudget import SLOW, RequestBudget

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from .clientbreaker import ClientBreakers
    from .forwarded import TrustedProxies
    from .metrics import Cell, Labels, Metrics
    from .registry import Registry, Route
    from .settings import ServerSettings
    from .tracing import Tracer

__all__ = ["Pipeline", "SystemHandler", "NO_ROUTE", "GATEWAY"]

logger = logging.getLogger("stockade.gateway")
NO_ROUTE = (("function", ""), ("tenant", ""))
GATEWAY = (("function", "_gateway"), ("tenant", ""))  # /healthz, /readyz, /metrics
_REFUSALS = (408, 413, 429, 503)  # counted by reason in stockade_gateway_rejections_total
SERIES_CACHE = 4096  # series kept per Pipeline (labels come from the manifest: bounded)

SystemHandler = Callable[[Request], Awaitable[Response]]


class Pipeline:
    """Answers every request of a worker (see the module docstring): the gateway's own
    endpoints from `system`, functions through `registry` and `invoker`, counted in
    `metrics`, traced by `tracer` and logged by `access` when set; a client's address is
    the one `proxies` (the `trusted_proxies`, the tracer's too) forward, else its peer's."""

    def __init__(self, invoker: Handler, registry: Registry,
                 system: Mapping[str, SystemHandler], metrics: Metrics,
                 settings: ServerSettings, tracer: Tracer | None = None,
                 access: AccessLog | None = None,
                 clients: ClientBreakers | None = None,
                 proxies: TrustedProxies | None = None) -> None:
        self.invoker = invoker
        self.clients = clients
        self.registry = registry
        self.system = system
        self.metrics = metrics
        self.tracer = tracer
        self.access = access
        self.funclog = FunctionLog(settings)
        self.body_timeout = settings.body_timeout
        self.body_min_rate = settings.body_min_rate
        self.proxies = proxies
        self.budget = RequestBudget(settings.body_buffer, settings.body_buffer_per_client,
                                    settings.max_connections_ipv6_prefix,
                                    SLOW * settings.body_min_rate)
        # (labels, status) -> the request counter's cell and the duration histogram's
        # data, looked up in `metrics` once per series, not once per request.
        self._series: dict[tuple[Labels, int], tuple[Cell, list[float]]] = {}

    async def __call__(self, request: Request) -> Response:
        start = time.perf_counter()
        tracer = self.tracer
        span_start = tracer.begin(request) if tracer is not None else 0
        try:
            response = await self._routed(request)
        except StockadeError as exc:
            response = self._refused(request, exc)
        except Exception as exc:
            logger.exception("request %s %s failed", request.method, request.path)
            request.state["error"] = "internal error (see the traceback above)"
            response = render_error(exc, request.path)
        self.funclog.after(request, response)
        if span_start:
            tracer.end(request, response, span_start)  # type: ignore[union-attr]
        self._count(request, response.status, start)
        if self.access is not None:
            self.access.write(request, response, start)
        return response

    async def _routed(self, request: Request) -> Response:
        """Routing, body, limits, then the invoker (raises what any of them refuses):
        one coroutine, not one each."""
        state = request.state
        handler = self.system.get(request.path)
        if handler is not None:
            state["labels"] = GATEWAY
            # Sent in its one form, as a function's route: `/%6detrics` past a proxy's
            # rule for `/metrics` read every tenant's counts.
            encoded = encoded_route(request.path, request.raw_path)
            if encoded is not None:
                raise BadRequest(encoded)
            return await handler(request)
        ambiguous = ambiguous_path(request.path, request.raw_path)
        if ambiguous is not None:
            raise BadRequest(ambiguous)
        route = self.registry.routes.match(request.path)
        if route is None:
            raise NotFound("no function is routed at this path")
        encoded = encoded_route(route.spec.route, request.raw_path)
        if encoded is not None:
            raise BadRequest(encoded)
        if not route.spec.allows(request.method):
            raise MethodNotAllowed(f"function {route.spec.name} does not accept "
                                   f"{request.method}", route.spec.methods)
        state["route"] = route
        # The body, within its deadline and the worker's budget, before any slot is taken.
        client = request.client[0] if request.client else ""
        hold = None
        try:
            if not request.body_read:  # the worker's protocol saw a head without a body
                hold = self.budget.hold(client)
                await request.read_body(route.spec.max_body, self.body_timeout,
                                        self.body_min_rate, hold)
            clients = self.clients
            gate = route.gate
            if clients is not None:
                # Before any slot or breaker probe is taken: a refused client holds none.
                proxies = self.proxies
                if proxies is not None:
                    client = proxies.client(client, request.headers)
                state["client"] = client
                state["source"] = source = clients.source(client)
                clients.check(route.spec.name, route.spec.tenant, client)
                state["admitted"] = now = time.monotonic()
                held = clients.standing.take(route.spec.name, route.spec.tenant, source, now)
                if held is not None:  # no breaker is asked for it (standing.py)
                    state["standing"] = held
                    gate = route.standing_gate
            # Limits: the function's and the tenant's slots through the route's gate (429
            # when either is spent, 503 for an open breaker or unavailable shared state),
            # given back after the response, charging the guest's CPU time.
            try:
                lease = admit_now(gate) or await admit(gate)
            except BaseException:
                self._settle(state)
                raise
            if lease.degraded:  # decided by this replica alone: shared state unavailable
                self.metrics.inc("stockade_gateway_state_fallbacks_total", route.labels)
            if lease.probe:  # the breaker's probe: freed by the Invoker if it never runs
                state["probe"] = True
            try:
                return await self.invoker(request)
            finally:
                self._settle(state)
                lease.release(float(state.get("cpu_seconds", 0.0)))
        finally:
            if hold is not None:  # most requests have no body: nothing was charged
                hold.release()

    def _settle(self, state: dict[str, Any]) -> None:
        """The standing ticket this request took (if any), settled as it ends: its run
        began (`ran`, the Invoker's), or it was refused before (an inline attempt that
        outgrew its budget is not that run: a sleeping guest's, every time)."""
        held = state.get("standing")
        if held is not None and self.clients is not None:
            spec = state["route"].spec
            self.clients.standing.settle(spec.name, spec.tenant, state["source"], held,
                                         "ran" in state)

    def _refused(self, request: Request, exc: StockadeError) -> Response:
        """problem+json for `exc`; refusals (408, 413, 429, 503) counted by reason."""
        request.state["error"] = exc.message  # the reason, for the logs (funclog.py)
        if isinstance(exc, HttpProblem) and exc.http_status in _REFUSALS:
            route: Route | None = request.state.get("route")
            reason = str(exc.extra.get("limit") or exc.extra.get("reason") or exc.slug)
            self.metrics.inc("stockade_gateway_rejections_total",
                             (*(route.labels if route else NO_ROUTE), ("reason", reason)))
        return render_error(exc, request.path)

    def _count(self, request: Request, status: int, start: float) -> None:
        """Count the response by function, tenant and status; time it per function."""
        state = request.state
        route: Route | None = state.get("route")
        labels = route.labels if route is not None else state.get("labels", NO_ROUTE)
        key = (labels, status)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        series[0].value += 1
        # Metrics.observe, inlined: a call per request costs more than these three lines.
        data = series[1]
        elapsed = time.perf_counter() - start
        data[bisect_left(BUCKETS, elapsed)] += 1
        data[-2] += elapsed
        data[-1] += 1

    def _new_series(self, key: tuple[Labels, int]) -> tuple[Cell, list[float]]:
        """The cells of a (labels, status) not counted since the cache was last emptied.
        Emptying forgets only the cache: `Metrics` keeps every series, and hands the same
        cells out again."""
        if len(self._series) >= SERIES_CACHE:
            self._series.clear()
        labels, status = key
        metrics = self.metrics
        series = self._series[key] = (
            metrics.counter("stockade_gateway_requests_total",
                            (*labels, ("code", str(status)))),
            metrics.histogram("stockade_gateway_request_duration_seconds", labels[:1]))
        return series

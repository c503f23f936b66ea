"""`Invoker`: the innermost handler. It reads the body, runs the routed function once
(CGI in, CGI out), and turns the `Result` into a response. A run goes to a guest thread
unless the executor can finish it inline within a small budget (`try_inline`).

Outcomes map to statuses by kind: a clean exit renders the function's CGI response;
`timeout` is 504, `denied` 403, other limits and traps 502, an internal error 500.
An open circuit breaker answers 503 with `Retry-After` without running the guest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..envblock import EnvBlock
from ..invocation import Invocation, new_invocation_id
from ..policy import format_size
from ..result import Outcome, Result
from ..telemetry.record import ParentContext
from .cgi import cgi_environ, parse_output
from .manifest import HEADER_ALLOWANCE
from .messages import Request, Response
from .problem import BadGateway, Forbidden, GatewayTimeout, HttpProblem, Unavailable

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from .clientbreaker import ClientBreakers
    from .dispatch import Dispatcher
    from .manifest import FunctionSpec
    from .metrics import Cell, Labels, Metrics
    from .registry import Route
    from .tracing import TraceContext

__all__ = ["Invoker", "HttpInvocation", "response_for", "breaker_key", "longest_hold"]

logger = logging.getLogger("stockade.gateway")
# Added to a function's own timeout before the gateway gives up waiting (504): the
# guest's deadline normally ends the run first, this covers time spent queued.
BACKSTOP_GRACE = 1.0
SERIES_CACHE = 4096  # series kept per Invoker (labels come from the manifest: bounded)


def longest_hold(timeout: float) -> float:
    """The longest a request admitted for a function with `timeout` keeps its slots: its
    run may start up to a backstop (`timeout + BACKSTOP_GRACE`) late, queued for a guest
    thread or a pool worker, and a 504's answer waits up to another backstop for the run
    to stop. A shared store's lease must last this long (plus a grace): a lease of the
    timeout alone expires under a run that started late, and every replica admits the
    tenant's next run beside it."""
    return 2 * (timeout + BACKSTOP_GRACE)


# A closed breaker is asked again after this long (seconds), or after any violation
# here: a breaker opened by another process is seen within this time.
BREAKER_RECHECK = 0.5


@dataclass(frozen=True)
class HttpInvocation(Invocation):
    """An invocation made for an HTTP request: `parent` is the request's server span, so
    telemetry records the invocation span as its child (the ids themselves: formatting
    and parsing a `traceparent` per request costs more); `trigger` is the OTel
    `faas.trigger` of its span; `env_block` the CGI variables as bytes, for an executor
    that takes them so (`Prepared.cgi`), instead of `env`; `source` the client, as its
    function's breaker counts it (`ClientBreakers.source`)."""

    parent: ParentContext | None = None
    trigger: str = "http"
    env_block: EnvBlock | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        """No checks: the gateway builds it from checked parts (the manifest's `args`,
        the body's bytes, CGI variables as pairs of text), one per request."""

    @classmethod
    def of_request(cls, stdin: bytes, spec: FunctionSpec, env: tuple[tuple[str, str], ...],
                   env_block: EnvBlock | None, parent: ParentContext | None,
                   source: str | None = None,
                   invocation_id: str | None = None) -> HttpInvocation:
        """The invocation of `spec` for one request, built in one step: a frozen
        dataclass's `__init__` sets each of its eleven fields through
        `object.__setattr__`, a cost paid on every request."""
        invocation = object.__new__(cls)
        invocation.__dict__.update(
            args=spec.args, stdin=stdin, env=env, name=spec.name, tenant=spec.tenant,
            invocation_id=invocation_id or new_invocation_id(), traceparent=None,
            breaker=breaker_key(spec.name), parent=parent, trigger="http",
            env_block=env_block, source=source)
        return invocation


def breaker_key(function: str) -> str:
    """The circuit breaker of a function: keyed by its name (with the tenant beside it),
    not its module's digest, so changing the module's bytes does not escape it."""
    return f"function:{function}"


class Invoker:
    """Runs the function `request.state["route"]` names; see the module docstring."""

    def __init__(self, dispatcher: Dispatcher, metrics: Metrics,
                 telemetry: Telemetry | None = None, inline: bool = True,
                 clients: ClientBreakers | None = None) -> None:
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.telemetry = telemetry
        self.inline = inline
        self.clients = clients  # the Pipeline's, told of violations; None: off
        self._closed_until: dict[tuple[str, str | None], float] = {}  # (function, tenant)
        # (labels, outcome, executor) -> the cells of the quota CPU, invocation and guest
        # CPU counters, looked up in `metrics` once per series, not once per request.
        self._series: dict[tuple[Labels, Outcome, str], tuple[Cell, Cell, Cell]] = {}

    async def __call__(self, request: Request) -> Response:
        route: Route = request.state["route"]
        spec = route.spec
        if not request.body_read:  # read already by the Pipeline, with its deadline
            await request.read_body(spec.max_body)
        trace: TraceContext | None = request.state.get("trace")
        source: str | None = request.state.get("source")  # the Pipeline's `ClientBreakers`
        invocation_id = new_invocation_id()
        # This request holds its breaker's half-open probe when a shared store granted it
        # with the lease (marked by the `Pipeline`): bound to its run before anything here
        # can raise, and freed when the request fails before its run (a request whose CGI
        # variables are refused held it for `probe_timeout`, 503 for everyone).
        probe = "probe" in request.state
        holder = None
        if probe and self.telemetry is not None:
            holder = HttpInvocation.of_request(b"", spec, (), None, None, source, invocation_id)
            self.telemetry.probe_held(route.prepared.sha256, holder)
        try:
            cgi = route.prepared.cgi  # set when the executor takes the variables as bytes
            invocation = HttpInvocation.of_request(
                request.body, spec,
                () if cgi else cgi_environ(request, spec.route, spec.headers),
                cgi.block(request) if cgi else None, trace.as_parent() if trace else None,
                source, invocation_id)
            request.state["invocation_id"] = invocation_id  # for the logs
            if holder is not None:
                self._refuse_counted_client(route, invocation)
            # Short guests run right here (see fastexec.py); the breaker is asked first,
            # unless the client is in standing (standing.py).
            standing = "standing" in request.state
            if self.inline and not standing:
                probe = self._admit(route, invocation) or probe
        except BaseException:
            if holder is not None:
                self._run_unused(route, holder, True)
            raise
        result: Result | None = None
        abandoned = 0.0  # CPU of an inline attempt that outgrew its budget
        if self.inline:
            try:
                result, abandoned = route.prepared.try_inline(invocation)
            except BaseException as exc:
                self._run_raised(route, invocation, probe, exc)
                raise
            if result is not None:
                abandoned = 0.0  # the finished run's own usage counts it, once
            elif route.prepared.inlines:
                self.metrics.inc("stockade_gateway_offloaded_total", route.labels)
        if result is None:
            if abandoned:  # charged however the rest goes
                request.state["cpu_seconds"] = abandoned
            # In flight while it waits for a guest thread and runs there: an inline run
            # starts and ends within this call, where no one could see the gauge move.
            metrics = self.metrics
            metrics.add("stockade_gateway_inflight", route.labels, 1)
            try:
                result = await self._dispatch(request, route, invocation,
                                              not self.inline and not standing, probe)
            finally:
                metrics.add("stockade_gateway_inflight", route.labels, -1)
        request.state["result"] = result  # its stderr and outcome, for the logs
        request.state["ran"] = True  # a standing ticket is not given back (standing.py)
        guest_cpu = result.usage.cpu_ms / 1000
        cpu = abandoned + guest_cpu
        request.state["cpu_seconds"] = cpu
        if result.outcome is Outcome.EXITED:
            self._ran_clean(route, request)
        elif result.outcome.is_violation:
            self._violated(route, result.outcome, request.state.get("client"))
        # Counted as Metrics.inc would, through cells kept per series (see _new_series).
        key = (route.labels, result.outcome, route.prepared.kind)
        cells = self._series.get(key)
        if cells is None:
            cells = self._new_series(key)
        quota, invocations, guest = cells
        quota.value += cpu
        invocations.value += 1
        guest.value += guest_cpu
        if result.coldstart:  # a prepared function's first run only: not worth a cell
            self.metrics.inc("stockade_gateway_coldstarts_total", route.labels)
        return response_for(route, result)

    def _ran_clean(self, route: Route, request: Request) -> None:
        """A run here exited: its client's standing ticket (standing.py), again."""
        clients = self.clients
        if clients is not None:
            state = request.state
            clients.standing.ran_clean(route.spec.name, route.spec.tenant, state["source"],
                                       state["admitted"])

    def _violated(self, route: Route, outcome: Outcome, client: str | None) -> None:
        """A run here hit a limit: the breaker is asked again, and the client's address
        (the Pipeline's) counts toward its own breaker."""
        spec = route.spec
        self._closed_until.pop((spec.name, spec.tenant), None)
        clients = self.clients
        if clients is not None and clients.config.counts(outcome):
            clients.violated(spec.name, spec.tenant, client)

    async def _dispatch(self, request: Request, route: Route, invocation: Invocation,
                        check: bool, probe: bool) -> Result:
        """Run on a guest thread, within the backstop. `probe`: this request was granted
        its breaker's probe already (inline admission, or a shared store's lease); one
        that never starts is freed, not failed."""
        timeout = route.spec.policy.limits.timeout
        backstop = None if timeout is None else timeout + BACKSTOP_GRACE
        lock = threading.Lock()
        started = abandoned = False
        finished = threading.Event()
        ended: Outcome | None = None  # how a run the backstop gave up on ended

        def call() -> Result:
            nonlocal started, ended
            with lock:  # a run the backstop gave up on before it started never starts
                if abandoned:
                    raise GatewayTimeout(f"no response within {backstop:g} s")
                started = True
            try:
                result = self._call(route, invocation, check, probe)
                ended = result.outcome
                return result
            finally:
                finished.set()

        try:
            return await self.dispatcher.run(call, backstop, route.spec.tenant)
        except GatewayTimeout:
            with lock:
                abandoned = True
                ran = started
            if not ran:  # nothing more to charge; a standing ticket taken is given back
                self._run_unused(route, invocation, probe)
            else:
                # The guest still runs out its own deadline: charge the whole timeout
                # (the lease's release), and count it as the quota's CPU.
                request.state["cpu_seconds"] = timeout or 0.0
                request.state["ran"] = True
                self.metrics.inc("stockade_gateway_quota_cpu_seconds_total", route.labels,
                                 timeout or 0.0)
                # The 504 waits until the run has stopped (its deadline, or its pool
                # worker killed): the request's concurrency slot is not given to another
                # run while this one still runs. Polled on the loop, not waited on an
                # executor thread (reloads share those), and bounded: a run still going a
                # whole backstop later is logged and its slot let go.
                give_up = time.monotonic() + (backstop or 0.0)
                while not finished.is_set() and time.monotonic() < give_up:
                    await asyncio.sleep(0.02)
                if not finished.is_set():
                    logger.error("%s: a run still going %.1f s after its 504; its "
                                 "concurrency slot is released", route.spec.name,
                                 2 * (backstop or 0.0))
                    ended = Outcome.TIMEOUT  # it outlived its own deadline
                # Counted for its client as an answered one is: a client whose runs wait
                # out the backstop is not spared its own breaker, nor a clean one its
                # standing.
                if ended is Outcome.EXITED:
                    self._ran_clean(route, request)
                elif ended is not None and ended.is_violation:
                    self._violated(route, ended, request.state.get("client"))
            raise
        except BaseException:
            # Refused or cancelled while queued: a probe granted at admission never ran.
            # It proves nothing: freed for the next request, not failed (a client filling
            # the queue whenever the breaker half-opens would otherwise hold it open).
            with lock:  # a queued call that did not start yet never will
                abandoned = True
                ran = started
            if not ran:
                self._run_unused(route, invocation, probe)
            raise

    def _call(self, route: Route, invocation: Invocation, check: bool,
              probe: bool) -> Result:
        """On a guest thread: ask the breaker (unless asked already), then run. A probe
        granted with the lease stays this run's whatever the breaker answers here."""
        if check:
            try:
                probe = self._admit(route, invocation) or probe
            except BaseException:
                self._run_unused(route, invocation, probe)  # it never started
                raise
        try:
            return route.prepared.run(invocation)
        except BaseException as exc:
            self._run_raised(route, invocation, probe, exc)
            raise

    def _run_raised(self, route: Route, invocation: Invocation, probe: bool,
                    exc: BaseException) -> None:
        """A run raised: a probe it held failed, unless the run was refused before it
        started (`Unavailable`: its cordon's pool busy or draining), which proves nothing
        and frees it (an attacker holding the pool at half-open re-opened the breaker)."""
        if not probe:  # only this request's own probe is settled with it
            return
        if isinstance(exc, Unavailable):
            self._run_unused(route, invocation, probe)
        else:
            self._run_failed(route, invocation)

    def _run_failed(self, route: Route, invocation: Invocation) -> None:
        """A run raised instead of returning a Result: a breaker probe that raised failed."""
        if self.telemetry is not None:
            self.telemetry.run_failed(route.prepared.sha256, invocation)

    def _run_unused(self, route: Route, invocation: Invocation, probe: bool) -> None:
        """A run that never started: the breaker's probe, if this request holds it, is
        freed for another request (never another request's probe: that one runs)."""
        if self.telemetry is not None and probe:
            self.telemetry.run_unused(route.prepared.sha256, invocation)

    def _admit(self, route: Route, invocation: Invocation) -> bool:
        """Raise Unavailable (503) while the function's circuit breaker is open; True when
        this run is its half-open probe. A closed breaker is trusted for
        `BREAKER_RECHECK` seconds (one database read fewer per request), unless a run
        here violated a limit since."""
        if self.telemetry is None:
            return False
        key = (route.spec.name, route.spec.tenant)
        now = time.monotonic()
        if self._closed_until.get(key, 0.0) > now:
            return False
        decision = self.telemetry.admit(route.spec.module.name, route.prepared.sha256,
                                        invocation, route.spec.policy)
        if decision.allowed and decision.state in ("closed", "disabled"):
            self._closed_until[key] = now + BREAKER_RECHECK
        if not decision.allowed:
            retry = max(1.0, (decision.until or 0.0) - time.time())
            raise Unavailable(f"function {route.spec.name}: {decision.message}", retry,
                              reason="breaker")
        if decision.probe:
            self._refuse_counted_client(route, invocation)
        return decision.probe

    def _refuse_counted_client(self, route: Route, invocation: Invocation) -> None:
        """This run was granted its breaker's half-open probe: when its client is one the
        breaker already counted (one of those that opened it), free the probe and raise
        Unavailable. Its input may be what fails; one such client took every probe and
        kept the function offline for everyone."""
        telemetry = self.telemetry
        if telemetry is None or not telemetry.counted(route.prepared.sha256, invocation):
            return
        telemetry.run_unused(route.prepared.sha256, invocation)
        config = telemetry.breaker_config
        raise Unavailable(f"function {route.spec.name}: its circuit breaker is half-open "
                          f"and lets one run through to see whether it recovered, not one "
                          f"of a client whose requests made it hit a limit",
                          config.cooldown if config is not None else 1.0, reason="breaker")

    def _new_series(self, key: tuple[Labels, Outcome, str]) -> tuple[Cell, Cell, Cell]:
        """The cells of a (labels, outcome, executor) not counted since the cache was last
        emptied, made in the order `Metrics.inc` made their series before (quota CPU
        first). Emptying forgets only the cache: `Metrics` keeps every series, and hands
        the same cells out again."""
        if len(self._series) >= SERIES_CACHE:
            self._series.clear()
        labels, outcome, executor = key
        metrics = self.metrics
        cells = self._series[key] = (
            metrics.counter("stockade_gateway_quota_cpu_seconds_total", labels),
            metrics.counter("stockade_gateway_invocations_total",
                            (*labels, ("outcome", outcome.value), ("executor", executor))),
            metrics.counter("stockade_gateway_guest_cpu_seconds_total", labels))
        return cells


def response_for(route: Route, result: Result) -> Response:
    """The HTTP response for a finished run (raises the HttpProblem for a failed one)."""
    name = route.spec.name
    outcome = result.outcome
    if outcome is Outcome.EXITED:
        if result.stdout_truncated:
            raise BadGateway(f"function {name}: the response is larger than "
                             f"{format_size(route.spec.max_response)}", outcome="output_limit")
        try:
            return parse_output(result.stdout, route.spec.max_response, HEADER_ALLOWANCE,
                                route.spec.headers)
        except BadGateway as exc:
            code = result.guest_exit_code
            suffix = f" (it exited with code {code})" if code else ""
            raise BadGateway(f"function {name}: {exc.message}{suffix}",
                             outcome=outcome.value, exit_code=code) from None
    detail = f"function {name}: {result.message or outcome.value}"
    problem: type[HttpProblem]
    if outcome is Outcome.TIMEOUT:
        problem = GatewayTimeout
    elif outcome is Outcome.DENIED:
        problem = Forbidden
    elif outcome is Outcome.ERROR:
        problem = HttpProblem
    else:
        problem = BadGateway
    raise problem(detail, outcome=outcome.value)

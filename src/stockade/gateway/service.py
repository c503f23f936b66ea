"""`GatewayService`: everything one worker process runs, wired together.

It loads the manifest, prepares the functions (executors, registry), owns the guest
thread pool, metrics and telemetry, builds the handler stack, answers the gateway's
own endpoints, and reloads the manifest on request. `start` and `close` bracket its
life (the ASGI lifespan calls them); `close` waits for in-flight guests.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..replica import replica_id
from ..state import StateBackend, open_state
from .accesslog import AccessLog, access_logger
from .clientbreaker import ClientBreakers
from .dispatch import Dispatcher
from .executor import Executors
from .forwarded import TrustedProxies
from .invoke import Invoker
from .layers import Pipeline
from .manifest import Manifest, load_manifest
from .messages import Handler, Request, Response
from .metrics import CONTENT_TYPE, Metrics, MetricsStore, render
from .registry import Registry, Routes
from .settings import ServerSettings
from .tracing import Tracer

if TYPE_CHECKING:
    from ..observe import RunObserver
    from ..telemetry import Telemetry

__all__ = ["GatewayService"]

logger = logging.getLogger("stockade.gateway")
METRICS_INTERVAL = 1.0  # seconds between snapshot files
GATEWAY_TELEMETRY = "hybrid"  # the export profile when neither manifest nor env names one


class GatewayService:
    """One worker's gateway for the manifest at `path`; `overrides` are server settings
    given on the command line (they win over `[server]`, also after a reload);
    `snapshot`, the supervisor's copy of the manifest text it last accepted, is read
    instead of `path` (`load_manifest`)."""

    def __init__(self, path: Path, overrides: Mapping[str, Any] | None = None, *,
                 index: int = 0, workers: int = 1, metrics_dir: Path | None = None,
                 snapshot: Path | None = None) -> None:
        self.path = path
        self.snapshot = snapshot
        self.overrides = dict(overrides or {})
        self.index = index
        self.workers = workers
        self.metrics = Metrics()
        self.store = MetricsStore(metrics_dir, index) if metrics_dir else None
        self.draining = False
        self.replica = replica_id()
        self.settings = ServerSettings()
        self.telemetry: Telemetry | None = None
        self.registry: Registry | None = None
        self.dispatcher: Dispatcher | None = None
        self.executors: Executors | None = None
        self.state: StateBackend | None = None
        self.handler: Handler | None = None
        self._snapshots: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()

    def load(self) -> Manifest:
        """Read the manifest with the command line's server settings applied."""
        manifest = load_manifest(self.path, snapshot=self.snapshot)
        return replace(manifest, server=manifest.server.override(**self.overrides))

    def start(self) -> None:
        """Load the manifest and prepare every function (blocking). Raises PolicyError,
        ModuleNotFound or ModuleError."""
        manifest = self.load()
        self.settings = settings = manifest.server
        observers: tuple[RunObserver, ...] = ()
        self.state = state = open_state(
            manifest.state, self.store.directory / "quotas" if self.store else None,
            self.index, self._state_fallback)
        self.telemetry = telemetry = _open_telemetry(settings, state)
        if telemetry is not None:
            observers = (telemetry.observer,)
        self.executors = Executors(settings.executor, settings.threads, observers,
                                   settings.pool_workers)
        self.dispatcher = dispatcher = Dispatcher(settings.threads, settings.max_queue)
        # A shared store checks each function's breaker with its quotas, in one call.
        self.registry = registry = Registry(
            self.executors, state, breakers=telemetry is not None and settings.breakers
            and manifest.state.shared)
        self._swap(manifest, registry.build(manifest))
        self.handler = self._stack(registry, dispatcher)

    def _stack(self, registry: Registry, dispatcher: Dispatcher) -> Handler:
        breakers = self.telemetry.breaker_config if self.telemetry is not None else None
        clients = None if breakers is None or not self.settings.breaker_clients \
            else ClientBreakers(breakers)
        invoker = Invoker(dispatcher, self.metrics, self.telemetry, self.settings.inline,
                          clients)
        system = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics}
        trusted = self.settings.trusted_proxies
        proxies = TrustedProxies(trusted) if trusted else None  # one, the tracer's too
        tracer = None
        if self.telemetry is not None and self.telemetry.settings.enabled:
            tracer = Tracer(self.telemetry, proxies)
        # `serve -q` quiets the access log for the worker's life: no line to format.
        access = None
        if self.settings.access_log != "off" and access_logger().isEnabledFor(logging.INFO):
            access = AccessLog(self.settings.access_log)
        return Pipeline(invoker, registry, system, self.metrics, self.settings, tracer, access,
                        clients, proxies)

    async def started(self) -> None:
        """Begin background work once the event loop runs: metrics snapshots, and the
        telemetry file written by a thread of its own (a request never waits for it; an
        idle worker writes a burst's records on the interval, not when it is killed)."""
        _settle()
        if self.telemetry is not None:
            self.telemetry.write_in_background()
        if self.store is not None:
            self.store.write(self.metrics)
            self._snapshots = asyncio.get_running_loop().create_task(
                self._snapshot(self.store))

    async def reload(self) -> bool:
        """Load the manifest again and swap the routes; on any error keep serving the old
        ones. Loading runs off the event loop, requests keep flowing. Returns success."""
        registry = self.registry
        if registry is None:
            return False
        async with self._reloading:
            loop = asyncio.get_running_loop()
            try:
                manifest = await loop.run_in_executor(None, self.load)
                routes = await loop.run_in_executor(None, registry.build, manifest)
            except Exception as exc:  # noqa: BLE001 - a bad manifest must not stop serving
                logger.error("reload failed, still serving the previous manifest: %s", exc)
                self.metrics.inc("stockade_gateway_reloads_total", (("result", "failed"),))
                return False
            # The changes that wait for a restart are reported once, by the supervisor
            # (`restart_changes`), not by every worker.
            self._swap(manifest, routes)
            _settle()
            self.metrics.inc("stockade_gateway_reloads_total", (("result", "ok"),))
            return True

    def _swap(self, manifest: Manifest, routes: Routes) -> None:
        """Serve `routes` (of `manifest`), its tenants sharing the guest threads."""
        if self.registry is not None:
            self.registry.swap(manifest, routes)
        if self.dispatcher is not None:
            self.dispatcher.share_among([spec.tenant for spec in manifest.functions])

    def _state_fallback(self, reason: str) -> None:
        """Shared state was unavailable for a request (`fail_open`: decided here alone,
        `fail_closed`: refused); counted by policy (on the event loop thread, as admissions)."""
        self.metrics.inc("stockade_gateway_state_unavailable_total", (("policy", reason),))

    async def _snapshot(self, store: MetricsStore) -> None:
        """Each second: the metrics snapshot the other workers' /metrics read."""
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            store.write(self.metrics)

    # -- the gateway's own endpoints ---------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.draining:
            return _json(503, {"status": "draining"})
        functions = len(self.registry.routes.functions) if self.registry else 0
        return _json(200, {"status": "ready", "functions": functions})

    async def _metrics(self, request: Request) -> Response:
        if self.store is None:
            text = render([self.metrics.snapshot()], self.replica)
        else:
            self.store.write(self.metrics)
            text = render(self.store.read_all(), self.replica)
        return Response(200, [(b"content-type", CONTENT_TYPE.encode())], text.encode())

    def close(self) -> None:
        """Wait for running guests, then free engines, flush telemetry and write the last
        metrics snapshot. Safe twice."""
        if self._snapshots is not None:
            self._snapshots.cancel()
            self._snapshots = None
        if self.dispatcher is not None:
            self.dispatcher.close(wait=True)
        if self.executors is not None:
            self.executors.close()
        if self.registry is not None:
            self.registry.close()
        if self.telemetry is not None:
            self.telemetry.close()
        if self.state is not None:
            self.state.close()
        if self.store is not None:
            self.store.write(self.metrics)


def _settle() -> None:
    """Move what the worker holds for its life (modules, routes, engines, tens of
    thousands of objects) out of the cyclic collector's reach: a full collection
    walked them all, tens of milliseconds on the event loop every few ten thousand
    requests (about 3 µs a request). Unfrozen and collected first, so the previous
    routes of a reload are freed, not frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _open_telemetry(settings: ServerSettings, state: StateBackend) -> Telemetry | None:
    """Export, breakers and audit as `[server]` says: `telemetry = "off"` turns off
    export only; None when all three are off. Breakers live where `state` keeps them.
    Raises UsageError (an unusable audit key)."""
    from ..telemetry import open_telemetry

    if settings.telemetry == "off" and not settings.breakers and not settings.audit:
        return None
    # A server answers thousands of requests a second: unless told otherwise it samples
    # as the environment suggests (edge on a small host: 10 %).
    telemetry = open_telemetry(settings.telemetry, "stockade-gateway",
                               fallback=GATEWAY_TELEMETRY, breaker=settings.breakers,
                               audit=settings.audit, breaker_traps=settings.breaker_traps,
                               breaker_store=state.breakers)
    try:
        telemetry.prepare()  # the audit key is read before any confinement
    except BaseException:
        telemetry.close()
        raise
    return telemetry


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, [(b"content-type", b"application/json")], json.dumps(body).encode())

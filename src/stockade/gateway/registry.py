"""`Registry`: the functions a worker serves, swapped whole on reload.

A `Routes` table is immutable once built: a reload prepares every function of the new
manifest off the event loop, then swaps the table in one assignment, so requests in
flight finish with the function they started with. Limiters are kept by name across
reloads (quotas updated in place), so in-flight counts and budgets carry over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import ModuleError, ModuleNotFound
from .executor import Executors, Prepared, named_error
from .limits import Limiter
from .manifest import FunctionSpec, Manifest
from .settings import Quota

__all__ = ["Route", "Routes", "Registry"]

logger = logging.getLogger("stockade.gateway")


@dataclass(frozen=True, slots=True)
class Route:
    """A routed function: its prepared executor, limiters and metric labels."""

    spec: FunctionSpec
    prepared: Prepared
    function_limiter: Limiter
    tenant_limiter: Limiter
    labels: tuple[tuple[str, str], ...]


class Routes:
    """Path-prefix routing: the longest route that is a whole-segment prefix wins."""

    def __init__(self, routes: list[Route]) -> None:
        self._by_prefix = {route.spec.route: route for route in routes}
        self.functions = {route.spec.name: route for route in routes}
        self.quotas: dict[str, Quota] = {}  # limiter key -> this worker's share

    def match(self, path: str) -> Route | None:
        """The route for `path` (`/hello` serves `/hello` and `/hello/x`, not `/helloo`)."""
        candidate = path.rstrip("/") or "/"
        while True:
            route = self._by_prefix.get(candidate)
            if route is not None:
                return route
            if candidate == "/":
                return None
            candidate = candidate[:candidate.rfind("/")] or "/"


class Registry:
    """The current manifest and routes of one worker (`workers` share every quota)."""

    def __init__(self, executors: Executors, workers: int) -> None:
        self.executors = executors
        self.workers = workers
        self.manifest: Manifest | None = None
        self.routes = Routes([])
        self._limiters: dict[str, Limiter] = {}

    def build(self, manifest: Manifest) -> Routes:
        """Prepare every function (blocking: module loading may compile). Raises
        ModuleNotFound or ModuleError naming the function; nothing changes until `swap`."""
        routes = []
        quotas: dict[str, Quota] = {}
        for spec in manifest.functions:
            try:
                prepared = self.executors.prepare(spec)
            except (ModuleNotFound, ModuleError) as exc:
                raise named_error(exc, spec.name) from None
            function_key, tenant_key = f"function:{spec.name}", f"tenant:{spec.tenant}"
            quotas[function_key] = spec.quota.share(self.workers)
            quotas[tenant_key] = manifest.tenants.get(spec.tenant, Quota()).share(self.workers)
            routes.append(Route(
                spec, prepared,
                self._limiter(function_key, f"function {spec.name}", quotas[function_key]),
                self._limiter(tenant_key, f"tenant {spec.tenant}", quotas[tenant_key]),
                (("function", spec.name), ("tenant", spec.tenant)),
            ))
        built = Routes(routes)
        built.quotas = quotas
        return built

    def swap(self, manifest: Manifest, routes: Routes) -> None:
        """Serve `routes` from now on, applying their quotas to the live limiters (the
        event loop thread calls this)."""
        for key, quota in routes.quotas.items():
            limiter = self._limiters.get(key)
            if limiter is not None:
                limiter.update(quota)
        self.manifest = manifest
        self.routes = routes
        logger.info("serving %d functions from %s", len(manifest.functions),
                    manifest.source.name)

    def _limiter(self, key: str, label: str, quota: Quota) -> Limiter:
        # Reuse the live limiter (its quota changes at `swap`), or make one.
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = Limiter(label, quota)
        return limiter

"""`Registry`: the functions a worker serves, swapped whole on reload.

A `Routes` table is immutable once built: a reload prepares every function of the new
manifest off the event loop, then swaps the table in one assignment, so requests in
flight finish with the function they started with; a cordon's worker pool whose
functions and modules did not change is kept by the new table, processes and all. Each
route has a `Gate` of the worker's state backend (`stockade.state`): local limiters kept
by name across reloads (quotas updated in place at the swap, so in-flight counts and
budgets carry over) in memory every worker of the server shares, or Redis shared by
every replica.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import ModuleError, ModuleNotFound, UsageError
from ..state import Gate, GateSpec, LocalState, Quota, StateBackend
from .executor import Executors, named_error
from .invoke import longest_hold
from .manifest import FunctionSpec, Manifest
from .pool import start_pools
from .prepared import Prepared

if TYPE_CHECKING:
    from .pool import WorkerPool

__all__ = ["Route", "Routes", "Registry"]

logger = logging.getLogger("stockade.gateway")
# The share of the worker's open-file limit a manifest's quota cells and pool processes
# may take; the rest is for connections, modules, guests' files, logs and telemetry
# (a fixed reserve of 1,024 refused every manifest under a limit of 640).
MANIFEST_SHARE = 0.5
POOL_DESCRIPTORS = 4  # held per pool process: its pipes, and a log's


@dataclass(frozen=True, slots=True)
class Route:
    """A routed function: its prepared executor, admission gate and metric labels.
    `standing_gate` admits under the same quotas without asking the function's breaker:
    for a client in standing (`standing.py`); `gate` itself when no breaker is
    asked at admission."""

    spec: FunctionSpec
    prepared: Prepared
    gate: Gate
    labels: tuple[tuple[str, str], ...]
    standing_gate: Gate


class Routes:
    """Path-prefix routing: the longest route that is a whole-segment prefix wins."""

    def __init__(self, routes: list[Route]) -> None:
        self._by_prefix = {route.spec.route: route for route in routes}
        # The routes' lengths, longest first: a path is looked up at these only, never
        # at each of its segments (quadratic in a path of 32,000 one-byte segments).
        self._lengths = sorted({len(prefix) for prefix in self._by_prefix if prefix != "/"},
                               reverse=True)
        self.functions = {route.spec.name: route for route in routes}
        self.quotas: dict[str, Quota] = {}  # quota key -> the manifest's quota
        self.pools: dict[str, WorkerPool] = {}  # cordon -> its worker pool

    def match(self, path: str) -> Route | None:
        """The route for `path` (`/hello` serves `/hello` and `/hello/x`, not `/helloo`)."""
        candidate = path.rstrip("/") or "/"
        by_prefix = self._by_prefix
        route = by_prefix.get(candidate)
        if route is not None:
            return route
        size = len(candidate)
        for length in self._lengths:  # a whole-segment prefix ends before a "/"
            if length < size and candidate[length] == "/":
                route = by_prefix.get(candidate[:length])
                if route is not None:
                    return route
        return by_prefix.get("/")


def manifest_quotas(manifest: Manifest) -> dict[str, Quota]:
    """The quota of each key a manifest's routes count under (`function:F`, `tenant:T`)."""
    quotas: dict[str, Quota] = {}
    for spec in manifest.functions:
        quotas[f"function:{spec.name}"] = spec.quota
        quotas[f"tenant:{spec.tenant}"] = manifest.tenants.get(spec.tenant, Quota())
    return quotas


def check_descriptors(manifest: Manifest, cells: int, pool_workers: int) -> None:
    """Refuse a manifest whose quota cells (`cells` descriptors) and pool processes need
    more descriptors than `MANIFEST_SHARE` of the open-file limit. Raises UsageError.
    The supervisor checks it too, for a fresh worker: one that accepted what every worker
    refuses wrote it as the snapshot a restarted worker died on (found by review)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    cordons = {spec.cordon for spec in manifest.functions if spec.pooled}
    needed = cells + POOL_DESCRIPTORS * pool_workers * len(cordons)
    available = int(soft * MANIFEST_SHARE)
    if needed > available:
        raise UsageError(
            f"{len(manifest.functions)} functions need {needed} descriptors (quota "
            f"cells and pool workers, beside those served now), more than the "
            f"{available} a manifest may take of this worker's open-file limit of "
            f"{soft} (the rest is kept for connections): raise `ulimit -n` or serve "
            "fewer functions")


class Registry:
    """The current manifest and routes of one worker; quotas live in `state`."""

    def __init__(self, executors: Executors, state: StateBackend | None = None,
                 breakers: bool = False, lease_grace: float = 2.0) -> None:
        self.executors = executors
        self._own_state = state is None
        self.state = state or LocalState()
        self.breakers = breakers  # the state checks each function's breaker at admission
        self.lease_grace = lease_grace
        self.manifest: Manifest | None = None
        self.routes = Routes([])
        self._retiring: list[WorkerPool] = []

    def build(self, manifest: Manifest) -> Routes:
        """Prepare every function (blocking: module loading may compile). Raises
        ModuleNotFound or ModuleError naming the function, or UsageError for a manifest
        needing more descriptors than the worker has; nothing changes until `swap`, and
        a failed build releases the pools and quota cells it opened."""
        quotas = manifest_quotas(manifest)
        self._check_descriptors(manifest, quotas)
        running = self.routes.pools
        pools = start_pools(manifest.functions, self.executors.mode,
                            self.executors.pool_workers, running)
        try:
            routes = [self._route(spec, pools, quotas) for spec in manifest.functions]
        except BaseException:
            # Cells opened for names the live routes do not use went with the build
            # (kept, an EMFILE mid-build left the worker none to serve with).
            for cordon, pool in pools.items():
                if running.get(cordon) is not pool:  # the live routes' pools serve on
                    pool.close()
            self.state.retain(self.routes.quotas)
            raise
        built = Routes(routes)
        built.quotas = quotas
        built.pools = pools
        return built

    def _route(self, spec: FunctionSpec, pools: dict[str, WorkerPool],
               quotas: dict[str, Quota]) -> Route:
        try:
            prepared = self.executors.prepare(spec, pools)
        except (ModuleNotFound, ModuleError) as exc:
            raise named_error(exc, spec.name) from None
        function_key, tenant_key = f"function:{spec.name}", f"tenant:{spec.tenant}"
        # A slot outlives no request, and no request its slot: the lease lasts as long
        # as the gateway may hold the request (a run that starts late included).
        timeout = spec.policy.limits.timeout or 60.0
        unbroken = GateSpec(spec.name, spec.tenant, quotas[function_key],
                            quotas[tenant_key], longest_hold(timeout) + self.lease_grace)
        gate = self.state.gate(replace(unbroken, breaker=f"function:{spec.name}")) \
            if self.breakers else self.state.gate(unbroken)
        standing_gate = self.state.gate(unbroken) if self.breakers else gate
        return Route(spec, prepared, gate, (("function", spec.name), ("tenant", spec.tenant)),
                     standing_gate)

    def _check_descriptors(self, manifest: Manifest, quotas: dict[str, Quota]) -> None:
        """`check_descriptors`, the cells of the routes served now included (they stay
        open until the swap)."""
        check_descriptors(manifest, self.state.descriptors(quotas),
                          self.executors.pool_workers)

    def swap(self, manifest: Manifest, routes: Routes) -> None:
        """Serve `routes` from now on, applying their quotas to the live state (the
        event loop thread calls this)."""
        self.state.update(routes.quotas)
        # The quotas of names no route uses now are released (once their leases are).
        self.state.retain(routes.quotas)
        self.manifest = manifest
        old, self.routes = self.routes, routes
        self._retiring = [pool for pool in self._retiring if not pool.drained]
        kept = {id(pool) for pool in routes.pools.values()}
        for pool in old.pools.values():
            if id(pool) in kept:
                continue  # its cordon's functions did not change (`start_pools`)
            # Requests routed before the swap may still ask the old pool for a process:
            # it starts one for each such late run; the rest end with their runs.
            pool.retire()
            self._retiring.append(pool)
        logger.info("serving %d functions from %s", len(manifest.functions),
                    manifest.source.name)

    def close(self) -> None:
        """Stop the worker pools (and the quota state, when it made it). Safe twice."""
        for pool in [*self.routes.pools.values(), *self._retiring]:
            pool.close()
        if self._own_state:
            self.state.close()

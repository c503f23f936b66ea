"""`LocalState`: quotas of this server only, shared by its worker processes through the
mapped cells of `quota.py`; circuit breakers stay in telemetry's SQLite database.

This is the gateway's state when the manifest names no `[state] backend`, and each
replica's fallback under `fail_open` while Redis is unreachable.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from .base import FreeLease, Gate, GateSpec, Lease, StateBackend
from .errors import StateError
from .quota import Limiter, Quota, QuotaStore

__all__ = ["LocalState", "LocalGate"]


class _LocalLease:
    """Slots taken from two limiters, given back once. Never a breaker's probe: the
    local breakers are asked later, by telemetry."""

    __slots__ = ("_gate", "degraded", "_function_taken", "_tenant_taken")
    probe = False

    def __init__(self, gate: LocalGate, degraded: bool, function_taken: bool,
                 tenant_taken: bool) -> None:
        self._gate: LocalGate | None = gate
        self.degraded = degraded
        self._function_taken, self._tenant_taken = function_taken, tenant_taken

    def release(self, cpu_seconds: float = 0.0) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.tenant.release(cpu_seconds, self._tenant_taken)
            gate.function.release(cpu_seconds, self._function_taken)


class LocalGate(Gate):
    """The function's limiter, then its tenant's (whose slot is given back if the
    tenant refuses). Its breaker is asked later, by telemetry (`Invoker`)."""

    def __init__(self, spec: GateSpec, function: Limiter, tenant: Limiter,
                 degraded: bool = False) -> None:
        super().__init__(spec)
        self.function = function
        self.tenant = tenant
        self.degraded = degraded
        self._free = FreeLease(degraded)

    def admit(self) -> Lease:
        function, tenant = self.function, self.tenant
        if function.unlimited and tenant.unlimited:  # nothing to count (read per request:
            return self._free  # a reload may set a quota)
        function_taken = function.admit()
        try:
            tenant_taken = tenant.admit()
        except StateError:
            function.release(taken=function_taken)
            raise
        return _LocalLease(self, self.degraded, function_taken, tenant_taken)


class LocalState(StateBackend):
    """Quotas in `directory` shared by the server's workers (worker `index`), or in this
    process's memory when `directory` is None. `degraded` marks its leases (a fallback)."""

    name = "local"

    def __init__(self, directory: Path | None = None, index: int = 0,
                 degraded: bool = False) -> None:
        self.store = QuotaStore(directory, index)
        self.degraded = degraded
        self._limiters: dict[str, Limiter] = {}
        # Limiters `retain` dropped, open until their leases are given back. Each holds
        # two descriptors (a file and its mapping): kept for every name a reload ever
        # saw, they took all of a worker's (found by review).
        self._retiring: dict[str, Limiter] = {}
        self._lock = threading.Lock()  # builds run off the event loop

    def limiter(self, key: str, label: str, quota: Quota) -> Limiter:
        """The live limiter of `key` (`function:NAME`, `tenant:NAME`), made with `quota`
        on first use; its quota changes only at `update`."""
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                # A retiring one still counts its requests in flight: opening the cell
                # again would forget them (`reset_own`).
                limiter = self._retiring.pop(key, None)
                if limiter is None or not limiter.revive():
                    limiter = Limiter(label, quota, cell=self.store.cell(key))
                self._limiters[key] = limiter
            return limiter

    def gate(self, spec: GateSpec) -> LocalGate:
        function_label, tenant_label = spec.labels
        return LocalGate(
            spec, self.limiter(f"function:{spec.function}", function_label, spec.function_quota),
            self.limiter(f"tenant:{spec.tenant}", tenant_label, spec.tenant_quota),
            self.degraded)

    def update(self, quotas: Mapping[str, Quota]) -> None:
        for key, quota in quotas.items():
            limiter = self._limiters.get(key)
            if limiter is not None:
                limiter.update(quota)

    def retain(self, keys: Collection[str]) -> None:
        with self._lock:
            self._retiring = {k: v for k, v in self._retiring.items() if not v.closed}
            for key in [key for key in self._limiters if key not in keys]:
                limiter = self._retiring[key] = self._limiters.pop(key)
                limiter.retire()

    def descriptors(self, keys: Collection[str]) -> int:
        if self.store.directory is None:
            return 0  # anonymous mappings
        with self._lock:
            return 2 * len({*keys, *self._limiters, *self._retiring})

    def close(self) -> None:
        with self._lock:
            for limiter in [*self._limiters.values(), *self._retiring.values()]:
                limiter.close()
            self._limiters.clear()
            self._retiring.clear()

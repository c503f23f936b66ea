"""The shared-state interface: admission of one request, and the breakers' store.

    StateBackend            one per gateway worker process (`open_state`)
    ├── gate(GateSpec) -> Gate        one per routed function, built with the routes
    │   └── admit() -> Lease          concurrency, rate (GCRA) and CPU per minute of
    │       └── release(cpu_seconds)  the function and its tenant, and its breaker
    ├── update(quotas)                a reloaded manifest's quotas, applied at the swap
    ├── retain(keys)                  release the quotas no route uses any more
    └── breakers(config, on_transition) -> BreakerStore | None
                                      the circuit breakers' store (None: the local
                                      SQLite one telemetry opens itself)

`LocalState` (this server only: shared memory and SQLite) and `RedisState` (every
replica sharing one Redis) implement it. `admit` raises QuotaExceeded, BreakerOpen or
StateUnavailable (`errors.py`); the gateway renders them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .quota import Quota

if TYPE_CHECKING:
    from ..telemetry.breaker import BreakerConfig, BreakerStore, Transition

__all__ = ["Lease", "FreeLease", "FREE_LEASE", "Gate", "GateSpec", "StateBackend", "OnTransition"]

OnTransition = Callable[["Transition"], None]


class Lease(Protocol):
    """A request's admission; `release` it once the response is ready. `degraded` is
    True when it was decided by this replica alone (`fail_open` with the store down);
    `probe` when it is its breaker's half-open probe (freed by the breakers' store's
    `probe_unused` when the run never starts)."""

    degraded: bool
    probe: bool

    def release(self, cpu_seconds: float = 0.0) -> None:
        """Give back the concurrency slots and charge `cpu_seconds` of guest CPU."""


class FreeLease:
    """The admission of a gate with nothing to count: no quota, no breaker."""

    __slots__ = ("degraded",)
    probe = False

    def __init__(self, degraded: bool = False) -> None:
        self.degraded = degraded

    def release(self, cpu_seconds: float = 0.0) -> None:
        """Nothing was taken."""


FREE_LEASE = FreeLease()


@dataclass(frozen=True)
class GateSpec:
    """What one function's admission checks: its own quota and its tenant's, and the
    circuit breaker `breaker` (None: not checked at admission). A concurrency slot is
    held `lease_seconds` at most: a replica that dies holding one gives it back then."""

    function: str
    tenant: str
    function_quota: Quota
    tenant_quota: Quota
    lease_seconds: float = 60.0
    breaker: str | None = None

    @property
    def labels(self) -> tuple[str, str]:
        """How refusals name the quotas: (`function NAME`, `tenant NAME`)."""
        return f"function {self.function}", f"tenant {self.tenant}"


class Gate(ABC):
    """The admission of one function (see `GateSpec`)."""

    def __init__(self, spec: GateSpec) -> None:
        self.spec = spec

    @abstractmethod
    def admit(self) -> Lease:
        """Take the function's and the tenant's slots, or raise QuotaExceeded (with the
        seconds after which a retry can succeed), BreakerOpen or StateUnavailable."""

    async def admit_async(self) -> Lease:
        """`admit` on an event loop (a shared store batches the loop's admissions)."""
        return self.admit()

    def admit_now(self) -> Lease | None:
        """`admit_async` without awaiting when it would not wait (as `admit` raises);
        None when it must be awaited. Saves a request two coroutines."""
        return self.admit()


class StateBackend(ABC):
    """Where one worker process keeps quotas and breakers. `close()` twice is safe."""

    name = "state"

    @abstractmethod
    def gate(self, spec: GateSpec) -> Gate:
        """The admission of one function; quotas it shares by name with other gates
        (a tenant's) use the quotas live now until `update`."""

    @abstractmethod
    def update(self, quotas: Mapping[str, Quota]) -> None:
        """Apply a reloaded manifest's quotas (keys `function:NAME`, `tenant:NAME`)."""

    def retain(self, keys: Collection[str]) -> None:
        """Release what the quotas of keys not in `keys` hold (their routes were replaced,
        or never served: a failed build), once the leases taken from them are given
        back. Nothing by default."""
        return None

    def descriptors(self, keys: Collection[str]) -> int:
        """Descriptors this backend will hold once gates of `keys` are made, until the
        next `retain` (those of live keys included). None held by default."""
        return 0

    def breakers(self, config: BreakerConfig,
                 on_transition: OnTransition | None) -> BreakerStore | None:
        """The circuit breakers' store, or None for telemetry's local SQLite one."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections and shared memory. Safe twice."""

    def __enter__(self) -> StateBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The gateway's side of quotas and shared state: admission, with the state's refusals
translated into HTTP problems (the state layer knows nothing of HTTP)::

    QuotaExceeded     -> TooManyRequests  429  (Retry-After; `limit`: concurrency, rate, cpu)
    BreakerOpen       -> Unavailable      503  (Retry-After; `reason`: breaker)
    StateUnavailable  -> Unavailable      503  (Retry-After; `reason`: state)
"""

from __future__ import annotations

from ..state import BreakerOpen, Gate, Lease, QuotaExceeded, StateUnavailable
from .problem import HttpProblem, TooManyRequests, Unavailable

__all__ = ["admit", "admit_now"]

_REFUSALS = (QuotaExceeded, BreakerOpen, StateUnavailable)


def admit_now(gate: Gate) -> Lease | None:
    """Take the routed function's slots through `gate` without awaiting (a local gate, a
    free one): the lease, or None when `admit` must be awaited. Raises as `admit`."""
    try:
        return gate.admit_now()
    except _REFUSALS as exc:
        raise _problem(exc) from None


async def admit(gate: Gate) -> Lease:
    """Take the routed function's slots through `gate`. Raises TooManyRequests or
    Unavailable (see the module docstring)."""
    try:
        return await gate.admit_async()
    except _REFUSALS as exc:
        raise _problem(exc) from None


def _problem(exc: QuotaExceeded | BreakerOpen | StateUnavailable) -> HttpProblem:
    if isinstance(exc, QuotaExceeded):
        return TooManyRequests(exc.message, exc.retry_after, limit=exc.limit)
    reason = "breaker" if isinstance(exc, BreakerOpen) else "state"
    return Unavailable(exc.message, exc.retry_after, reason=reason)

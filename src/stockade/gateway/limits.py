"""The gateway's side of quotas and shared state: admission, with the state's refusals
translated into HTTP problems (the state layer knows nothing of HTTP)::

    QuotaExceeded     -> TooManyRequests  429  (Retry-After; `limit`: concurrency, rate, cpu)
    BreakerOpen       -> Unavailable      503  (Retry-After; `reason`: breaker)
    StateUnavailable  -> Unavailable      503  (Retry-After; `reason`: state)
"""

from __future__ import annotations

from ..state import BreakerOpen, Gate, Lease, QuotaExceeded, StateUnavailable
from .problem import TooManyRequests, Unavailable

__all__ = ["admit"]


def admit(gate: Gate) -> Lease:
    """Take the routed function's slots through `gate`. Raises TooManyRequests or
    Unavailable (see the module docstring)."""
    try:
        return gate.admit()
    except QuotaExceeded as exc:
        raise TooManyRequests(exc.message, exc.retry_after, limit=exc.limit) from None
    except BreakerOpen as exc:
        raise Unavailable(exc.message, exc.retry_after, reason="breaker") from None
    except StateUnavailable as exc:
        raise Unavailable(exc.message, exc.retry_after, reason="state") from None

"""Why the shared state refused a request. The gateway translates these into HTTP
problems at its boundary (`gateway/limits.py`)::

    StockadeError
    └── StateError
        ├── QuotaExceeded       a concurrency, rate or CPU quota is spent (429)
        ├── BreakerOpen         the function's circuit breaker is open (503)
        └── StateUnavailable    the shared store cannot be reached and the policy
                                is `fail_closed` (503); a command that must reach it
                                (`stockade breaker list|reset`) exits 69
"""

from __future__ import annotations

from ..errors import StockadeError

__all__ = ["StateError", "QuotaExceeded", "BreakerOpen", "StateUnavailable"]


class StateError(StockadeError):
    """A refusal by the shared state; `retry_after` is in seconds."""

    http_status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(StateError):
    """`limit` (`concurrency`, `rate` or `cpu`) of a function or tenant is spent."""

    http_status = 429

    def __init__(self, message: str, retry_after: float, limit: str) -> None:
        super().__init__(message, retry_after)
        self.limit = limit


class BreakerOpen(StateError):
    """The circuit breaker of the function (for its tenant) refuses runs."""


class StateUnavailable(StateError):
    """The shared store did not answer within its timeout (or answered with an error)."""

    exit_code = 69  # EX_UNAVAILABLE, as for an unreachable OCI registry

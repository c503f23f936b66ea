"""What functions say and why they fail, in the server log: `FunctionLog`.

After each routed request it logs, as lines of ``stockade.function``:

- the function's stderr, line by line, at most `stderr_limit` bytes a request (the rest
  is counted: ``... 1234 more bytes``);
- a failure the gateway decided (403, 408, 413, 429, 500, 502, 503, 504) with its
  reason, and a 4xx/5xx the function answered itself.

Every line names the function and the invocation id, so a line in the server log leads
to the run's span. Guests choose what they write to stderr: each function gets
`log_rate` lines a second (token bucket, bursts of ten seconds' worth); lines beyond
that are dropped and counted, and the count is logged once the function has budget
again. Messages pass through `PrintableFormatter`, so a guest cannot move the cursor,
forge a line or hide text.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .messages import Request, Response

if TYPE_CHECKING:
    from ..result import Result
    from .registry import Route
    from .settings import ServerSettings

__all__ = ["FunctionLog", "LineBudget", "MAX_STDERR_LINES", "BURST_SECONDS"]

logger = logging.getLogger("stockade.function")
MAX_STDERR_LINES = 100  # lines of one request's stderr, whatever their length
BURST_SECONDS = 10.0  # a function may log this many seconds' worth of lines at once
_BUDGETS_MAX = 4096  # functions remembered (names come from the manifest)


class LineBudget:
    """A token bucket of log lines per key: `rate` a second, `burst` at most."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.dropped: dict[str, int] = {}

    def take(self, key: str, now: float | None = None) -> bool:
        """Spend one line of `key`'s budget; False (and counted) when there is none."""
        now = time.monotonic() if now is None else now
        tokens, at = self._tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._tokens[key] = (tokens, now)
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        if len(self._tokens) >= _BUDGETS_MAX and key not in self._tokens:
            self._tokens.clear()
        self._tokens[key] = (tokens - 1.0, now)
        return True

    def take_dropped(self, key: str) -> int:
        """How many lines of `key` were dropped since last asked (and reset it)."""
        return self.dropped.pop(key, 0)


class FunctionLog:
    """Logs each routed request's function stderr and failure (see the module)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.limit = settings.stderr_limit
        self.budget = LineBudget(settings.log_rate, settings.log_rate * BURST_SECONDS)

    def after(self, request: Request, response: Response) -> None:
        """What `request` left behind, once answered with `response`."""
        state = request.state
        route: Route | None = state.get("route")
        if route is not None:
            # Most requests leave nothing to log: a success without stderr.
            result: Result | None = state.get("result")
            if response.status >= 400 or (result is not None and result.stderr):
                self.record(route, request, response.status)

    def record(self, route: Route, request: Request, status: int) -> None:
        """Log what `request` to `route` left behind: stderr, then its failure."""
        name = route.spec.name
        invocation = str(request.state.get("invocation_id", "-"))
        result: Result | None = request.state.get("result")
        if result is not None and result.stderr and self.limit:
            self._stderr(name, invocation, result.stderr)
        if status >= 400:
            error = request.state.get("error")
            if error is not None:
                self._line(name, logging.WARNING, "function %s [%s]: %d: %s",
                           name, invocation, status, error)
            else:
                self._line(name, logging.INFO, "function %s [%s]: answered %d",
                           name, invocation, status)

    def _stderr(self, name: str, invocation: str, stderr: bytes) -> None:
        # Only "\n" ends a line: a "\r" or "\u2028" stays inside it, escaped.
        text = stderr[:self.limit].decode("utf-8", "replace").removesuffix("\n")
        lines = text.split("\n")[:MAX_STDERR_LINES]
        logged = 0
        for line in lines:
            # Lines beyond the budget are dropped, and counted, one by one.
            self._line(name, logging.INFO, "function %s [%s] stderr: %s", name, invocation,
                       line)
            logged += len(line.encode()) + 1
        hidden = len(stderr) - logged
        if hidden > 0:
            self._line(name, logging.INFO, "function %s [%s] stderr: ... %d more bytes not "
                       "logged (server.stderr_limit)", name, invocation, hidden)

    def _line(self, name: str, level: int, message: str, *args: object) -> bool:
        """Log one line within the function's budget (first reporting what was dropped)."""
        if not logger.isEnabledFor(level):
            return True
        if not self.budget.take(name):
            return False
        dropped = self.budget.take_dropped(name)
        if dropped:
            logger.warning("function %s: %d log lines suppressed (server.log_rate)",
                           name, dropped)
        logger.log(level, message, *args)
        return True

"""`ClientBreakers`: a function's circuit breaker, per client, in one worker.

A function's breaker (`telemetry.breaker`) counts a client's violations once per window,
so one client sending inputs that hit a limit (a body that makes the function loop until
its timeout) cannot take the function offline for everyone. That client is refused
here instead: once its runs of one function hit a limit `threshold` times within
`window` seconds, its requests to that function are answered 429 with `Retry-After`
for `cooldown` seconds, before any quota slot or breaker probe is taken (`layers.py`).
To the function's breaker a client is its address (`source`, `connlimit.peer_key`), an
IPv6 client its /48 network whatever the connection cap counts: one holder of a /48 has
65,536 /64s, so counted by /64 it alone would be `threshold` clients. Fixed, not a
setting: replicas sharing a breaker must count clients alike. Refused here is only the
/64 (a host's network), so a client's neighbours in its /48 are not refused with it; a
holder of the /48 moving to another /64 is refused there after `threshold` more runs and
still opens no breaker. Kept per worker, in memory: a client spreading its connections
over workers and replicas gets a threshold in each, still never the function's breaker.

A client the function has served is not refused by the function's breaker
(`standing.py`, `ClientBreakers.standing`): a violation here ends its standing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque

from ..telemetry.breaker import BreakerConfig
from .connlimit import peer_key
from .problem import TooManyRequests
from .standing import Standing

__all__ = ["ClientBreakers", "CLIENTS_KEPT", "SOURCE_IPV6_PREFIX", "REFUSED_IPV6_PREFIX"]

logger = logging.getLogger("stockade.gateway")
CLIENTS_KEPT = 4096  # (function, client) pairs remembered; the oldest is forgotten first
SOURCE_IPV6_PREFIX = 48  # an IPv6 client, to a function's breaker: its site's network
REFUSED_IPV6_PREFIX = 64  # and refused as: its host's network

_Key = tuple[str, str | None, str]  # function, tenant, client


class ClientBreakers:
    """Per-(function, client) breakers with `config`'s threshold, window and cooldown."""

    def __init__(self, config: BreakerConfig, kept: int = CLIENTS_KEPT) -> None:
        self.config = config
        self._kept = kept
        self._violations: OrderedDict[_Key, deque[float]] = OrderedDict()
        self._open: OrderedDict[_Key, float] = OrderedDict()  # refused until (monotonic)
        self.standing = Standing(kept)

    def source(self, address: str | None) -> str | None:
        """The client an address counts as (None: no address, a Unix socket's peer)."""
        return peer_key(address, SOURCE_IPV6_PREFIX) if address else None

    def check(self, function: str, tenant: str | None, address: str | None) -> None:
        """Raise TooManyRequests while the breaker of the client at `address` for
        `function` is open."""
        if not self._open or not address:
            return
        key = (function, tenant, peer_key(address, REFUSED_IPV6_PREFIX))
        until = self._open.get(key)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._open[key]
            return
        raise TooManyRequests(
            f"function {function}: refused for {math.ceil(left)} s: your requests made it hit a "
            f"limit {self.config.threshold} times within {self.config.window:g} s",
            left, limit="client_breaker")

    def violated(self, function: str, tenant: str | None, address: str | None) -> None:
        """The run of `function` of the client at `address` hit a limit: counted, and its
        breaker opened at the threshold; the client's standing ends."""
        if not address:
            return
        self.standing.violated(function, tenant, peer_key(address, SOURCE_IPV6_PREFIX))
        config, now = self.config, time.monotonic()
        client = peer_key(address, REFUSED_IPV6_PREFIX)
        key = (function, tenant, client)
        violations = self._violations
        times = violations.get(key)
        if times is None:
            if len(violations) >= self._kept:
                violations.popitem(last=False)  # the least recent
            times = violations[key] = deque(maxlen=config.threshold)
        else:
            violations.move_to_end(key)
        times.append(now)
        if len(times) >= config.threshold and now - times[0] <= config.window:
            if len(self._open) >= self._kept:
                self._open.popitem(last=False)
            self._open[key] = now + config.cooldown
            times.clear()
            # One line per refusal period (a run each third violation at most): the
            # address to look for, and the cause when it is a proxy's.
            logger.warning("function %s: client %s refused for %g s: its runs hit a limit "
                           "%d times within %g s (a proxy? see [server] trusted_proxies)",
                           function, client, config.cooldown, config.threshold,
                           config.window)

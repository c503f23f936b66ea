"""Quotas enforced per function and per tenant: concurrency, request rate, CPU time.

A `Limiter` holds one quota's state in one worker process (each worker enforces its
share of the manifest's quota, see `Quota.share`). `admit` either takes a slot or raises
TooManyRequests with the seconds after which a retry can succeed; `release` returns
the slot and charges the guest CPU time the invocation used. All methods run on the
event loop thread, so no locking is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .problem import TooManyRequests
from .settings import Quota

__all__ = ["Limiter", "TokenBucket"]

Clock = Callable[[], float]


class TokenBucket:
    """`rate` tokens per second up to `capacity`; the level may go negative when a
    charge exceeds it (CPU time known only after the run), and then refills."""

    __slots__ = ("rate", "capacity", "level", "stamp", "clock")

    def __init__(self, rate: float, capacity: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.clock = clock
        self.stamp = clock()

    def refill(self) -> float:
        """Bring the level up to date; returns it."""
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def wait_for(self, amount: float) -> float:
        """Seconds until the level reaches `amount` (0 if it already has)."""
        missing = amount - self.refill()
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        """Remove `amount` (the level may go below zero)."""
        self.refill()
        self.level -= amount


class Limiter:
    """The live state of one quota; `label` (e.g. `tenant acme`) appears in refusals."""

    def __init__(self, label: str, quota: Quota, clock: Clock = time.monotonic) -> None:
        self.label = label
        self.active = 0
        self._clock = clock
        self.quota = quota
        self._rate: TokenBucket | None = None
        self._cpu: TokenBucket | None = None
        self.update(quota)

    def update(self, quota: Quota) -> None:
        """Apply a new quota (manifest reload), keeping in-flight counts and balances."""
        self.quota = quota
        if quota.rate is None:
            self._rate = None
        else:
            burst = float(quota.burst or max(1.0, quota.rate))
            if self._rate is None:
                self._rate = TokenBucket(quota.rate, burst, self._clock)
            self._rate.rate, self._rate.capacity = quota.rate, burst
        if quota.cpu_per_minute is None:
            self._cpu = None
        else:
            per_second = quota.cpu_per_minute / 60.0
            if self._cpu is None:
                self._cpu = TokenBucket(per_second, quota.cpu_per_minute, self._clock)
            self._cpu.rate, self._cpu.capacity = per_second, quota.cpu_per_minute

    @property
    def unlimited(self) -> bool:
        """True when this quota limits nothing."""
        return self.quota.concurrency is None and self._rate is None and self._cpu is None

    def admit(self) -> None:
        """Take a slot. Raises TooManyRequests (with `Retry-After`) when the concurrency
        limit is reached, the rate bucket is empty or the CPU budget is spent."""
        limit = self.quota.concurrency
        if limit is not None and self.active >= limit:
            raise TooManyRequests(f"{self.label}: {limit} concurrent invocations at most",
                                  1.0, limit="concurrency")
        if self._cpu is not None:
            wait = self._cpu.wait_for(0.0)
            if wait > 0:
                raise TooManyRequests(
                    f"{self.label}: CPU budget of {self.quota.cpu_per_minute:g} s per minute "
                    "spent", wait, limit="cpu")
        if self._rate is not None:
            wait = self._rate.wait_for(1.0)
            if wait > 0:
                raise TooManyRequests(f"{self.label}: more than {self.quota.rate:g} requests "
                                      "per second", wait, limit="rate")
            self._rate.take(1.0)
        self.active += 1

    def release(self, cpu_seconds: float = 0.0) -> None:
        """Return the slot taken by `admit` and charge `cpu_seconds` of guest CPU."""
        self.active -= 1
        if self._cpu is not None and cpu_seconds > 0:
            self._cpu.take(cpu_seconds)

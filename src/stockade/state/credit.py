"""Admissions a replica takes from Redis ahead of time and spends by itself for a few
milliseconds: the shared state's answer to "one round trip per request is too dear".

    Demand   how many admissions one gate made in the last `HOLD` seconds: the size
             of the next grant it asks for (1, no grant, below two a window)
    Credit   one grant: `tokens` rate admissions already counted in Redis, and the
             concurrency slots (lease ids, already leased in Redis) that go with them

Why the limits still hold: every admission a credit gives was counted by Redis when it
was granted (the rate's GCRA moved, the slots leased, by the same script that decides a
single request), so no replica can spend what the others see as free. Redis grants
more than the one request only while the tenant is far from its limits (at most half
of what is left of the rate's burst and of the concurrency, and CPU budget above half,
its breaker closed), so a tenant at its limit is decided request by request as before.
A credit lives `HOLD` seconds (`BREAKER_HOLD` for a gate that checks a breaker): what
it did not give is then returned (rate tokens refunded, slots released), so the quota
is neither exceeded nor wasted. An admission is spent at most that long after Redis
counted it (the rate's accuracy); a breaker opened elsewhere is seen within
`BREAKER_HOLD` plus one round trip; a slot of a credit starts a run at most `HOLD`
after Redis leased it, well within the lease's grace.
"""

from __future__ import annotations

__all__ = ["Credit", "Demand", "HOLD", "BREAKER_HOLD", "MAX_GRANT", "hold_for"]

HOLD = 0.05  # seconds a credit may be spent here before its remainder goes back
BREAKER_HOLD = 0.02  # the same for a gate that checks a circuit breaker
MAX_GRANT = 64  # admissions one round trip may take for one gate


def hold_for(breaker: bool) -> float:
    """How long a gate's credits live: shorter when it checks a breaker, so that one
    opened through another replica refuses here well within 100 ms."""
    return BREAKER_HOLD if breaker else HOLD


class Demand:
    """Admissions of one gate per `hold` window, for the size of its next grant."""

    __slots__ = ("_hold", "_start", "_count", "_last")

    def __init__(self, hold: float = HOLD) -> None:
        self._hold = hold
        self._start = 0.0
        self._count = 0
        self._last = 0

    def add(self, now: float) -> None:
        """Count one admission asked for at `now` (monotonic seconds)."""
        elapsed = now - self._start
        if elapsed >= self._hold:
            # A gap longer than a window: the last window saw nothing.
            self._last = self._count if elapsed < 2 * self._hold else 0
            self._start, self._count = now, 0
        self._count += 1

    def want(self) -> int:
        """Admissions to ask for: one, unless the gate takes two or more a window (then
        twice what it took, so that a credit lasts its window, at most MAX_GRANT)."""
        seen = max(self._last, self._count)
        return 1 if seen < 2 else min(MAX_GRANT, 2 * seen)


class Credit:
    """`tokens` admissions granted by Redis, spendable until `until` (monotonic). `free`
    holds the granted concurrency slots not in use (lease ids), or is None when the
    gate's quotas count no concurrency. `cpu` is guest CPU time of its finished runs,
    charged when the credit is settled. Used on the event loop's thread only."""

    __slots__ = ("tokens", "free", "until", "cpu", "live")

    def __init__(self, tokens: int, free: list[str] | None, until: float) -> None:
        self.tokens = tokens
        self.free = free
        self.until = until
        self.cpu = 0.0
        self.live = True

    def take(self, now: float) -> str | None:
        """One admission: a free slot's lease id ("" when slots are not counted), or
        None when the credit is spent, out of slots or past `until`."""
        if self.tokens <= 0 or now >= self.until or not self.live:
            return None
        free = self.free
        if free is None:
            self.tokens -= 1
            return ""
        if not free:
            return None
        self.tokens -= 1
        return free.pop()

    def give_back(self, lease_id: str, cpu_seconds: float) -> bool:
        """A run of this credit ended: its slot is free again here (its lease in Redis
        stays). False when the credit was settled meanwhile, or has no admission left
        to use the slot for (release it to Redis: kept here, it stayed taken for
        every replica with nothing running until the credit settled)."""
        if not self.live or self.tokens <= 0:
            return False
        if self.free is not None:
            self.free.append(lease_id)
        self.cpu += cpu_seconds
        return True

    def settle(self) -> tuple[int, list[str], float]:
        """End the credit: (tokens to refund, free slots to release, CPU to charge).
        Slots in use are released by their runs. Settling twice returns nothing."""
        if not self.live:
            return 0, [], 0.0
        self.live = False
        free, self.free = self.free or [], []
        tokens, self.tokens = self.tokens, 0
        cpu, self.cpu = self.cpu, 0.0
        return tokens, free, cpu

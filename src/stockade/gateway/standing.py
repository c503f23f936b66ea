"""`Standing`: the clients a function has served, which its circuit breaker does not refuse.

A function's breaker opens once `threshold` clients' runs hit a limit within its window;
when it half-opens, the next request is its probe. Clients at `threshold + 1` rotated
addresses kept it open for everyone: three opened it, and each time it half-opened a
fresh one took the probe with an input that hits a limit again. A client in standing is
let past the breaker (the `Pipeline` admits it through the route's `standing_gate`, the
same quotas without the breaker, and the `Invoker` asks no breaker for it), so such an
attack keeps out only the clients the function has not served.

Standing is a ticket, one request at a time. A run of the function that exited
(whatever its code) gives its client one, for `STANDING` seconds; a request takes it
as it is admitted (`take`). Its run exiting gives it again (`ran_clean`), its run
hitting a limit ends it (`violated`), and a request refused before its run gives it
back (`give_back`). Otherwise (a trap, an error) it is spent. So a client in standing
that sends inputs hitting a limit while the breaker is open gets one such run, however
many requests it sends at once; and a clean run admitted before its client's violation
(a long one, beside it) gives no standing when it ends after it.

Kept per worker, in memory, per function (and tenant), at most `kept` clients each
(`clientbreaker.CLIENTS_KEPT`),
the least recently served forgotten first: another function's clients never push
these out. A client is its `source`, as the function's breaker counts it (an IPv6
client's /48): one network's addresses cannot fill the table and push out the clients
it keeps. A client whose connections land on another worker has no standing there.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["Standing", "STANDING"]

STANDING = 3600.0  # seconds a clean run keeps its client past the function's breaker

_Function = tuple[str, str | None]  # function, tenant


class Standing:
    """The tickets past each function's breaker (see the module docstring)."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        # Per function: source -> when its ticket was given (time.monotonic()).
        self._tickets: dict[_Function, OrderedDict[str, float]] = {}
        # Per function: source -> when its last run hit a limit.
        self._spoiled: dict[_Function, OrderedDict[str, float]] = {}

    def take(self, function: str, tenant: str | None, source: str | None,
             now: float) -> float | None:
        """Take the ticket of `source` for one request admitted at `now`: when it was
        given, or None (it has none, or an expired one)."""
        tickets = self._tickets.get((function, tenant))
        if tickets is None or not source:
            return None
        given = tickets.pop(source, None)
        if given is None or now - given > STANDING:
            return None
        return given

    def give_back(self, function: str, tenant: str | None, source: str | None,
                  given: float) -> None:
        """A request that took the ticket given at `given` was refused before its run:
        the client's again (unless its run hit a limit since, or it has a newer one)."""
        key = (function, tenant)
        spoiled = self._spoiled.get(key)
        if not source or (spoiled is not None and spoiled.get(source, -1.0) >= given):
            return
        tickets = self._table(self._tickets, key)
        if source not in tickets:
            self._put(tickets, source, given)

    def ran_clean(self, function: str, tenant: str | None, source: str | None,
                  admitted: float) -> None:
        """A run of the client `source`, admitted at `admitted`, exited: a ticket for
        `STANDING` seconds, unless one of its runs hit a limit since it was admitted."""
        if not source:
            return
        key = (function, tenant)
        spoiled = self._spoiled.get(key)
        if spoiled is not None and spoiled.get(source, -1.0) >= admitted:
            return
        self._put(self._table(self._tickets, key), source, time.monotonic())

    def violated(self, function: str, tenant: str | None, source: str | None) -> None:
        """A run of the client `source` hit a limit: its ticket ends, and the runs of it
        admitted before now give none when they end."""
        if not source:
            return
        key = (function, tenant)
        tickets = self._tickets.get(key)
        if tickets is not None:
            tickets.pop(source, None)
        self._put(self._table(self._spoiled, key), source, time.monotonic())

    @staticmethod
    def _table(tables: dict[_Function, OrderedDict[str, float]],
               key: _Function) -> OrderedDict[str, float]:
        table = tables.get(key)
        if table is None:
            table = tables[key] = OrderedDict()
        return table

    def _put(self, table: OrderedDict[str, float], source: str, at: float) -> None:
        """`source` at `at`, as the most recent; the least recent forgotten past `kept`."""
        table[source] = at
        table.move_to_end(source)
        if len(table) > self._kept:
            table.popitem(last=False)

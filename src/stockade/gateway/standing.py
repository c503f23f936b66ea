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
hitting a limit ends it (`violated`); otherwise `settle` gives it back to a request
refused before its run, and ends it after a run that did neither (a trap, an error).
So a client in standing that sends inputs hitting a limit while the breaker is open
gets one such run in a worker, however many requests it sends at once; and a clean run
admitted before its client's violation (a long one, beside it) gives no standing when
it ends after it.

Kept per worker, in memory, per function (and tenant), at most `kept` clients each
(`clientbreaker.CLIENTS_KEPT`; both tables full, ~1.2 MB a function): another
function's clients never take these places. A live ticket is never pushed out: a table
full of them gives no new one until the oldest expires (4,096 sources with one clean
run each pushed out every client served before them, found by review). A client is its
`source`, as the function's breaker counts it (an IPv6 client's /48): one network's
hosts hold one place. A client whose connections land on another worker has no standing
there, and one in standing in several workers gets a run past the breaker in each.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["Standing", "STANDING"]

STANDING = 3600.0  # seconds a clean run keeps its client past the function's breaker
_TAKEN = -1.0  # a ticket a request holds: its place is kept until the request settles it

_Function = tuple[str, str | None]  # function, tenant


class Standing:
    """The tickets past each function's breaker (see the module docstring)."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        # Per function: source -> when its ticket was given (time.monotonic()), or _TAKEN.
        self._tickets: dict[_Function, OrderedDict[str, float]] = {}
        # Per function: source -> when its last run hit a limit; and the latest such time
        # forgotten (a run admitted before it gives no ticket: it may be that source's).
        self._spoiled: dict[_Function, OrderedDict[str, float]] = {}
        self._forgotten: dict[_Function, float] = {}

    def take(self, function: str, tenant: str | None, source: str | None,
             now: float) -> float | None:
        """Take the ticket of `source` for one request admitted at `now`: when it was
        given, or None (none, taken by another request, or expired). The request then
        `settle`s it, whatever happens."""
        tickets = self._tickets.get((function, tenant))
        if tickets is None or not source:
            return None
        given = tickets.get(source)
        if given is None or given == _TAKEN:
            return None
        if now - given > STANDING:
            del tickets[source]
            return None
        tickets[source] = _TAKEN
        tickets.move_to_end(source)  # the front stays the oldest given, for `_give`
        return given

    def settle(self, function: str, tenant: str | None, source: str, given: float,
               ran: bool) -> None:
        """The request that took the ticket given at `given` is over: unless its run
        gave it again or ended it, given back (`ran` False: refused before its run) or
        ended (a run that neither exited nor hit a limit)."""
        tickets = self._tickets.get((function, tenant))
        if tickets is None or tickets.get(source) != _TAKEN:
            return
        if ran:
            del tickets[source]
        else:
            tickets[source] = given

    def ran_clean(self, function: str, tenant: str | None, source: str | None,
                  admitted: float) -> None:
        """A run of the client `source`, admitted at `admitted`, exited: a ticket for
        `STANDING` seconds, unless one of its runs hit a limit since it was admitted."""
        if not source:
            return
        key = (function, tenant)
        spoiled = self._spoiled.get(key)
        if spoiled is not None and (spoiled.get(source, -1.0) >= admitted
                                    or self._forgotten[key] >= admitted):
            return
        self._give(self._table(self._tickets, key), source, time.monotonic())

    def violated(self, function: str, tenant: str | None, source: str | None) -> None:
        """A run of the client `source` hit a limit: its ticket ends, and the runs of it
        admitted before now give none when they end."""
        if not source:
            return
        key = (function, tenant)
        tickets = self._tickets.get(key)
        if tickets is not None:
            tickets.pop(source, None)
        spoiled = self._table(self._spoiled, key)
        now = time.monotonic()
        spoiled[source] = now
        spoiled.move_to_end(source)
        self._forgotten.setdefault(key, -1.0)
        if len(spoiled) > self._kept:
            _, self._forgotten[key] = spoiled.popitem(last=False)

    @staticmethod
    def _table(tables: dict[_Function, OrderedDict[str, float]],
               key: _Function) -> OrderedDict[str, float]:
        table = tables.get(key)
        if table is None:
            table = tables[key] = OrderedDict()
        return table

    def _give(self, tickets: OrderedDict[str, float], source: str, now: float) -> None:
        """A ticket given to `source` now, as the most recent; to a new client of a full
        table only in place of the oldest, expired (none is pushed out)."""
        if source not in tickets and len(tickets) >= self._kept:
            oldest, given = next(iter(tickets.items()))
            if given == _TAKEN or now - given <= STANDING:
                return
            del tickets[oldest]
        tickets[source] = now
        tickets.move_to_end(source)

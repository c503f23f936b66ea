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
as it is admitted (`take`), its place kept by a `Held` until the request settles it.
A run of the client exiting gives it again (`ran_clean`: the holder's, or another's
beside it, renews the held ticket rather than handing out a second one), its run
hitting a limit ends it (`violated`); otherwise `settle` gives it back to a request
refused before its run, and ends it after a run that did neither (a trap, an error).
So a client in standing that sends inputs hitting a limit while the breaker is open
gets one such run in a worker, however many requests it sends at once; and a clean run
admitted before its client's violation (a long one, beside it) gives no standing when
it ends after it.

Kept per worker, in memory, per function (and tenant), at most `kept` clients each
(`clientbreaker.CLIENTS_KEPT`; both tables full, ~1.2 MB a function): another
function's clients never take these places. A live ticket is never pushed out: a table
full of them gives no new one until one near its front expires (4,096 sources with one
clean run each pushed out every client served before them, found by review; so such
sources, refreshed hourly, keep new clients from standing instead). A client is its
`source`, as the function's breaker counts it (an IPv6 client's /48): one network's
hosts hold one place. A client whose connections land on another worker has no standing
there, and one in standing in several workers gets a run past the breaker in each.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, defaultdict

__all__ = ["Held", "Standing", "STANDING"]

STANDING = 3600.0  # seconds a clean run keeps its client past the function's breaker
_LOOKED_AT = 8  # entries from a full table's front looked at for an expired one


class Held:
    """A ticket a request holds, in its place in the table until the request settles
    it: when it was given, and when a clean run of its client gave it again meanwhile
    (that run's or another's: the holder's ticket is not replaced under it)."""

    __slots__ = ("given", "renewed")

    def __init__(self, given: float) -> None:
        self.given = given
        self.renewed: float | None = None


_Function = tuple[str, str | None]  # function, tenant


class Standing:
    """The tickets past each function's breaker (see the module docstring)."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        # Per function: source -> when its ticket was given (time.monotonic()), or the
        # request holding it.
        self._tickets: defaultdict[_Function, OrderedDict[str, float | Held]] = \
            defaultdict(OrderedDict)
        # Per function: source -> when its last run hit a limit; and the latest such time
        # forgotten (a run admitted before it gives no ticket: it may be that source's).
        self._spoiled: defaultdict[_Function, OrderedDict[str, float]] = \
            defaultdict(OrderedDict)
        self._forgotten: dict[_Function, float] = {}

    def take(self, function: str, tenant: str | None, source: str | None,
             now: float) -> Held | None:
        """Take the ticket of `source` for one request admitted at `now`, or None (none,
        held by another request, or expired). The request then `settle`s it, whatever
        happens."""
        tickets = self._tickets.get((function, tenant))
        if tickets is None or not source:
            return None
        given = tickets.get(source)
        if given is None or isinstance(given, Held):
            return None
        if now - given > STANDING:
            del tickets[source]
            return None
        held = tickets[source] = Held(given)
        return held

    def settle(self, function: str, tenant: str | None, source: str, held: Held,
               ran: bool) -> None:
        """The request holding `held` is over: its ticket is given again if a clean run
        renewed it, given back if no run began (`ran` False: refused before its run),
        else ended (a run that neither exited nor hit a limit). Nothing when a violation
        ended it meanwhile."""
        tickets = self._tickets.get((function, tenant))
        if tickets is None or tickets.get(source) is not held:
            return
        if held.renewed is not None:
            tickets[source] = held.renewed
            tickets.move_to_end(source)
        elif ran:
            del tickets[source]
        else:
            tickets[source] = held.given

    def ran_clean(self, function: str, tenant: str | None, source: str | None,
                  admitted: float) -> None:
        """A run of the client `source`, admitted at `admitted`, exited: a ticket for
        `STANDING` seconds, unless one of its runs hit a limit since it was admitted."""
        if not source:
            return
        key = (function, tenant)
        spoiled = self._spoiled.get(key)
        if spoiled is not None and (spoiled.get(source, -1.0) >= admitted
                                    or self._forgotten.get(key, -1.0) >= admitted):
            return
        tickets, now = self._tickets[key], time.monotonic()
        held = tickets.get(source)
        if isinstance(held, Held):
            held.renewed = now  # its holder settles it
        else:
            self._give(tickets, source, now)

    def violated(self, function: str, tenant: str | None, source: str | None) -> None:
        """A run of the client `source` hit a limit: its ticket ends, and the runs of it
        admitted before now give none when they end."""
        if not source:
            return
        key = (function, tenant)
        tickets = self._tickets.get(key)
        if tickets is not None:
            tickets.pop(source, None)
        spoiled = self._spoiled[key]
        spoiled[source] = time.monotonic()
        spoiled.move_to_end(source)
        if len(spoiled) > self._kept:
            _, self._forgotten[key] = spoiled.popitem(last=False)

    def _give(self, tickets: OrderedDict[str, float | Held], source: str,
              now: float) -> None:
        """A ticket given to `source` now, as the most recent; to a new client of a full
        table only in place of an expired one near its front (none is pushed out)."""
        if source not in tickets and len(tickets) >= self._kept:
            for oldest, given in itertools.islice(tickets.items(), _LOOKED_AT):
                if not isinstance(given, Held) and now - given > STANDING:
                    del tickets[oldest]
                    break
            else:
                return
        tickets[source] = now
        tickets.move_to_end(source)

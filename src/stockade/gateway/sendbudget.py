"""`SendBudget`: how many bytes of answers a gateway worker holds unsent at once.

A client that takes its answers slowly keeps their unsent bytes in the worker: the
transport holds what the kernel has not taken. The send rule (`protocol._sending`) bounds
how long, not how much: a client taking them at `body_min_rate` holds an 8 MiB answer for
over two hours, and 64 such connections held 1.2 GB. The budget bounds the bytes all
connections hold together, as `body_buffer` bounds request bodies: past `total`, the
connections taking their answers slowly of late (below `SLOW` times `body_min_rate`
over their last `RECENT` to twice that seconds, as for bodies) are aborted, those of the
client holding the most first, until the rest fits. A client within its fair share (the
budget divided among the clients holding answers, itself included) is never cut off,
nor is a connection reading fast: it frees its room soon by itself. A client is counted
as the connection cap counts it (`connlimit.peer_key`).

The worker's sweep (`protocol._Sweep`) passes over every connection's holding a few
times a second; a large answer handed over between sweeps that takes the total past the
budget brings the next pass forward (`added`). Used on the event loop thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

from .bodybudget import RECENT

__all__ = ["SendBudget", "Pace", "Holding", "LARGE"]

LARGE = 256 * 1024  # bytes: an answer this large brings the budget's pass forward if due

Connection = TypeVar("Connection")


class Pace:
    """How fast a connection's unsent bytes have gone of late: two marks (when, unsent
    then), the older where the rate is measured from, the newer moving on at most every
    `RECENT` seconds; an answer handed over starts both again."""

    __slots__ = ("marks",)

    def __init__(self, now: float, unsent: int) -> None:
        self.marks = [(now, unsent), (now, unsent)]

    def update(self, now: float, unsent: int, grew: bool) -> None:
        marks = self.marks
        if grew:
            marks[0] = marks[1] = (now, unsent)
        elif now - marks[1][0] >= RECENT:
            marks[0], marks[1] = marks[1], (now, unsent)

    def slow(self, now: float, unsent: int, rate: float) -> bool:
        """Fewer than `rate` bytes a second taken since the older mark, at least `RECENT`
        seconds ago (a burst, then a trickle, is slow)."""
        since, then = self.marks[0]
        return now - since >= RECENT and then - unsent < rate * (now - since)


class Holding(NamedTuple, Generic[Connection]):
    """One connection's unsent answers at a pass: its client (`peer_key`), the bytes the
    worker holds for it, and whether it takes them slowly of late."""

    connection: Connection
    client: str
    held: int
    slow: bool


class SendBudget:
    """At most `total` bytes of answers held unsent by one worker's connections."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0  # bytes held at the last pass
        self.added = 0  # bytes of large answers handed over since

    def added_answer(self, size: int) -> bool:
        """A large answer of `size` bytes was handed over: True when the total may now
        be past the budget, and a pass is due before the next sweep."""
        self.added += size
        return self.held + self.added > self.total

    def cuts(self, holdings: Sequence[Holding[Connection]]) -> list[Connection]:
        """The connections to abort so that the rest fits the budget: slow ones of the
        clients above their fair share, the largest holder's first, the connection
        holding the most first, no client cut below its share. Records the total left."""
        total = sum(holding.held for holding in holdings)
        self.added = 0
        self.held = total
        if total <= self.total:
            return []
        clients: dict[str, int] = {}
        for holding in holdings:
            clients[holding.client] = clients.get(holding.client, 0) + holding.held
        share = self.total // len(clients)
        over = total - self.total
        cuts, freed = [], 0
        for holding in sorted((h for h in holdings if h.slow),
                              key=lambda h: (-clients[h.client], -h.held)):
            if over <= 0:
                break
            if clients[holding.client] <= share:
                continue
            cuts.append(holding.connection)
            clients[holding.client] -= holding.held
            over -= holding.held
            freed += holding.held
        self.held = total - freed
        return cuts

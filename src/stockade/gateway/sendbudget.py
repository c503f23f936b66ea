"""`SendBudget`: how many bytes of answers a gateway worker holds unsent at once.

A client that takes its answers slowly keeps their unsent bytes in the worker: the
transport holds what the kernel has not taken. The send rule (`protocol._sending`) bounds
how long, not how much: a client taking them at `body_min_rate` holds an 8 MiB answer for
over two hours, and 64 such connections held 1.2 GB. The budget bounds the bytes all
connections hold together, as `body_buffer` bounds request bodies: past `total`, the
connections are reset until the rest fits. First those of the clients within their
fair share (the budget divided among the clients holding answers, itself included) that
take their bytes slower than `SLOW` times `body_min_rate`; then, of the clients above
their share, those that would not be done within `horizon` seconds at their pace, the
client holding the most first; then the others of the clients above their share, one
at a time from the client holding the most. Paces are measured over the last `RECENT`
to twice that seconds, or since the answer was handed over once `FIRST_LOOK` has passed.
Each step is an attack a review found: a fixed minimum pace alone let 150 connections
each reading 80 KB/s hold 2.5 GB; sparing every connection about to be done let 120
reading 900 KB/s hold 960 MB (as long as clients read, the worker makes their answers
faster than they take them); sparing clients within their share let three connections
taking 7 MB answers at 1 KB/s get every honest download reset; and cutting every lasting
connection first let one address reading three answers fast get an honest 100 KB/s
download reset. A client is counted as the
connection cap counts it (`connlimit.peer_key`).

The worker's sweep (`protocol._Sweep`) passes over every connection's holding a few
times a second; a large answer handed over between sweeps that takes the total past the
budget brings a pass forward to `FIRST_LOOK` after it (`added_answer`), once: while the
total stays past the budget, the sweep's passes go on. Used on the event loop thread only.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

from .requestbudget import RECENT

__all__ = ["SendBudget", "Pace", "Holding", "LARGE"]

LARGE = 256 * 1024  # bytes: an answer this large brings the budget's pass forward if due
FIRST_LOOK = 0.25  # seconds after an answer is handed over before its pace is judged

Connection = TypeVar("Connection")


class Pace:
    """How fast a connection's unsent bytes have gone of late: two marks (when, unsent
    then), the older where the pace is measured from, the newer moving on at most every
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

    def lasting(self, now: float, unsent: int, horizon: float) -> bool:
        """Whether the `unsent` bytes would still be there in `horizon` seconds at the
        pace taken since the older mark (a burst, then a trickle, is judged by the
        trickle); not judged (False) within `FIRST_LOOK` of it."""
        since, then = self.marks[0]
        elapsed = now - since
        return elapsed >= FIRST_LOOK and (then - unsent) * horizon < unsent * elapsed

    def slow(self, now: float, unsent: int, rate: float) -> bool:
        """Whether fewer than `rate` bytes a second were taken since the older mark; not
        judged (False) within `FIRST_LOOK` of it."""
        since, then = self.marks[0]
        elapsed = now - since
        return elapsed >= FIRST_LOOK and then - unsent < rate * elapsed


class Holding(NamedTuple, Generic[Connection]):
    """One connection's unsent answers at a pass: its client (`peer_key`), the bytes the
    worker holds for it, whether they would last past the horizon (`Pace.lasting`) and
    whether the client takes them slower than `SLOW` times `body_min_rate` (`Pace.slow`)."""

    connection: Connection
    client: str
    held: int
    lasting: bool
    slow: bool = False


class SendBudget:
    """At most `total` bytes of answers held unsent by one worker's connections."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0  # bytes held at the last pass
        self.added = 0  # bytes of large answers handed over since

    def added_answer(self, size: int) -> bool:
        """A large answer of `size` bytes was handed over: True when it may have taken
        the total past the budget, and a pass is due before the next sweep (not while
        the last pass left it past already: the sweep's passes go on)."""
        self.added += size
        return self.held <= self.total < self.held + self.added

    def cuts(self, holdings: Sequence[Holding[Connection]]) -> list[Connection]:
        """The connections to abort so that the rest fits the budget, in this order: slow
        ones of the clients within their fair share (clients within their share hold
        no more than the budget together); lasting ones of the clients above it, the
        client holding the most first, its largest first; then the others of the clients
        above it, each time one of the client holding the most; none of a client above
        its share once it is within it. Records the total left."""
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
        cuts: list[Connection] = []
        freed = 0

        def cut(holding: Holding[Connection]) -> None:
            nonlocal over, freed
            cuts.append(holding.connection)
            clients[holding.client] -= holding.held
            over -= holding.held
            freed += holding.held

        # Slow connections within their share first: three taking 7 MB answers at 1 KB/s,
        # each just within its share (the kernel held part of each), got every honest
        # download reset as it began, and stayed (found by review). A fast one within its
        # share is spared: cutting every lasting one first let one address reading three
        # answers at 1.8 MB/s each get an honest 100 KB/s download reset.
        within = {client for client, held in clients.items() if held <= share}
        for holding in sorted((h for h in holdings if h.slow and h.client in within),
                              key=lambda h: -h.held):
            if over <= 0:
                break
            cut(holding)
        # Lasting ones above it, the client holding the most first.
        for holding in sorted((h for h in holdings if h.lasting and h.client not in within),
                              key=lambda h: (-clients[h.client], -h.held)):
            if over <= 0:
                break
            if clients[holding.client] > share:
                cut(holding)
        # Each client's others, the largest last.
        queues: dict[str, list[Holding[Connection]]] = {}
        for holding in sorted((h for h in holdings if not h.lasting and h.client not in within),
                              key=lambda h: h.held):
            queues.setdefault(holding.client, []).append(holding)
        largest = [(-clients[client], client) for client in queues if clients[client] > share]
        heapq.heapify(largest)
        while over > 0 and largest:
            _, client = heapq.heappop(largest)
            cut(queues[client].pop())
            if clients[client] > share and queues[client]:
                heapq.heappush(largest, (-clients[client], client))
        self.held = total - freed
        return cuts

"""`SendBudget`: how many bytes of answers a gateway worker holds unsent at once.

A client that takes its answers slowly keeps their unsent bytes in the worker: the
transport holds what the kernel has not taken. The send rule (`protocol._sending`) bounds
how long, not how much: a client taking them at `body_min_rate` holds an 8 MiB answer for
over two hours, and 64 such connections held 1.2 GB. The budget bounds the bytes all
connections hold together, as `body_buffer` bounds request bodies: past `total`, the
connections are reset until the rest fits: first those that would not be done within
`horizon` seconds at the pace they took their bytes of late (over their last `RECENT`
to twice that seconds, or since the answer was handed over, once `FIRST_LOOK` has
passed), the client holding the most first; then the others of the clients above their
fair share (the budget divided among the clients holding answers, itself included), one
at a time from the client holding the most. Lasting bytes are what holds memory:
connections about to be done free their room by themselves, and a client within its
share loses none of them. A fixed minimum pace let 150 connections each reading 80 KB/s
hold 2.5 GB, sparing every connection about to be done let 120 reading 900 KB/s hold
960 MB (as long as clients read, the worker makes their answers faster than they take
them), and sparing lasting connections within their share let three taking 7 MB answers
at 1 KB/s get every honest download reset. A client is counted as the
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

from .bodybudget import RECENT

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


class Holding(NamedTuple, Generic[Connection]):
    """One connection's unsent answers at a pass: its client (`peer_key`), the bytes the
    worker holds for it, and whether they would last past the horizon (`Pace.lasting`)."""

    connection: Connection
    client: str
    held: int
    lasting: bool


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
        """The connections to abort so that the rest fits the budget: lasting ones first,
        the client holding the most first, its largest first; then, while still past
        the budget, those about to be done, each time one of the client holding the most
        while it is above its fair share (clients within their share hold no more than
        the budget together). Records the total left."""
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
        # Lasting bytes are what holds memory: three connections taking 7 MB answers at
        # 1 KB/s, each just within its share, got every honest download reset at once
        # while they stayed (found by review).
        for holding in sorted((h for h in holdings if h.lasting),
                              key=lambda h: (-clients[h.client], -h.held)):
            if over <= 0:
                break
            cuts.append(holding.connection)
            clients[holding.client] -= holding.held
            over -= holding.held
            freed += holding.held
        # Each client's connections about to be done, the largest last.
        queues: dict[str, list[Holding[Connection]]] = {}
        for holding in sorted((h for h in holdings if not h.lasting), key=lambda h: h.held):
            queues.setdefault(holding.client, []).append(holding)
        largest = [(-clients[client], client) for client in queues if clients[client] > share]
        heapq.heapify(largest)
        while over > 0 and largest:
            _, client = heapq.heappop(largest)
            holding = queues[client].pop()
            cuts.append(holding.connection)
            clients[client] -= holding.held
            over -= holding.held
            freed += holding.held
            if clients[client] > share and queues[client]:
                heapq.heappush(largest, (-clients[client], client))
        self.held = total - freed
        return cuts

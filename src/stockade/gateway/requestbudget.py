"""`RequestBudget`: how many bytes of requests still arriving a gateway worker holds at once.

Bodies are read whole before a function's slots are taken (`Pipeline`), and each byte
received extends the deadline of its body (a minimum rate): a client that sends a 1 MiB
body at `body_min_rate` holds on to it for 17 minutes. A few thousand such connections,
nearly free for the client, would take the worker's memory and every tenant's requests
with it. Heads are the same on a smaller scale: each connection may hold a head of up to
`max_header_size` until `header_timeout`, and four more queued behind an answer, which
the connection cap alone let reach 1.2 GiB a worker from one IPv6 /56 (found by review).
A worker keeps one budget for bodies (`body_buffer`) and one for heads (`header_buffer`,
`protocol.py`). Each bounds the bytes held, in total and per client address (the peer's:
the gateway never believes forwarding headers); what would go past either is refused
with 503 and `Retry-After`, and its connection is closed. A client address is counted as
the connection cap counts it (`connlimit.peer_key`): an IPv6 address as its /64 network,
whose host could otherwise multiply its share by its addresses.

A bound alone lets `total / per_client` addresses (four, by default) hold the whole
budget, and then every other client's body is refused until they let go. So when the
budget is full, a client within its fair share (the budget divided among the clients
holding bytes, itself included) takes room from the client holding the most, while that
one holds more than its share: its holds still arriving that come slowly (below `SLOW`
times `body_min_rate` over the last `RECENT` to twice that seconds: a burst then a
trickle is slow) or stalled (nothing for `STALLED` seconds), the smallest one that makes
the room or else the largest first, are cut off (503, closed; the client may send it
again, and gets its share). Nothing is cut off unless enough room is made. Heads are not
judged by pace (`paced`): any head still arriving of a client above its share may be cut
off, since an honest head arrives within a round trip, and heads on connections a client
churned every second or so were never old enough to be judged slow (found by review). A
fast upload, which frees its room soon by itself, and what arrived whole (a body waiting
for its run, which ends within its timeout; a head queued behind an answer) are never
cut off: cutting them let a few tiny requests from new addresses kill honest uploads.

Bytes are charged as they arrive and given back when they are no longer held (a body's
when its response is ready, a head's once its request has begun and its body arrived).
Used on the event loop thread only.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from .connlimit import IPV6_PREFIX, peer_key
from .problem import HttpProblem, Unavailable

__all__ = ["RequestBudget", "Hold", "RETRY_AFTER"]

RETRY_AFTER = 5.0  # seconds: what is held ends within its deadline
STALLED = 5.0  # seconds without a byte: a hold that may be cut off to make room
SLOW = 64  # times `body_min_rate`: a hold arriving slower of late may be cut off
RECENT = 2.0  # seconds: "of late" is the last two to four


class Hold:
    """One request's body (or one connection's head) in the budget: its client, the
    bytes charged to it, when it last grew and how fast of late, and, while it is still
    arriving, how to end its reading (`stop`: what cutting it off calls)."""

    __slots__ = ("budget", "client", "held", "stop", "cut", "grew", "marks")

    def __init__(self, budget: RequestBudget, client: str) -> None:
        self.budget = budget
        self.client = client
        self.held = 0
        self.stop: Callable[[], None] | None = None
        self.cut = False
        self.grew = now = budget.clock()
        # (when, bytes then): the older is where its recent rate is measured from; the
        # newer moves on at most every RECENT seconds.
        self.marks = [(now, 0), (now, 0)]

    def charge(self, size: int, stop: Callable[[], None] | None) -> None:
        """`size` more bytes arrived; `stop` ends their reading if they are cut off (None:
        they arrived whole, and are never cut off). Raises Unavailable (503) when the
        budget has no room for them, or when it cut this hold off already (its last
        bytes were on their way: the cut must hold, its bytes were given back)."""
        if self.cut:
            raise self._cut_off()
        self.stop = stop
        self.budget._take(self, size)
        self.grew = now = self.budget.clock()
        marks = self.marks
        if now - marks[1][0] >= RECENT:
            marks[0], marks[1] = marks[1], (now, self.held)

    def read(self) -> None:
        """It arrived whole: it is no longer cut off to make room. Raises Unavailable
        when it was cut off before its read could end."""
        if self.cut:
            raise self._cut_off()
        self.stop = None

    def refusal(self) -> HttpProblem | None:
        """Why the read ended early, when the budget cut it off (else None)."""
        return self._cut_off() if self.cut else None

    def _cut_off(self) -> HttpProblem:
        return _refusal(f"this client holds more than its share of the {self.budget.what} "
                        "the server is receiving, and this one came slowly; send it again",
                        self.budget.reason)

    def release(self, size: int | None = None) -> None:
        """Give back `size` bytes (None: every byte still charged)."""
        given = self.held if size is None else min(size, self.held)
        if given > 0:
            self.budget._give(self, given)


class RequestBudget:
    """At most `total` bytes of `what` held ("request bodies", "request heads"), at most
    `per_client` of them for one client address (an IPv6 address counted as its
    `/ipv6_prefix` network); holds arriving slower than `slow_rate` bytes a second of
    late, or stalled, may be cut off to make room; unless `paced`, any still arriving
    may. A refusal names `reason`, the setting. `clock` is `time.monotonic` (a test's
    own)."""

    def __init__(self, total: int, per_client: int, ipv6_prefix: int = IPV6_PREFIX,
                 slow_rate: int = SLOW * 1024,
                 clock: Callable[[], float] = time.monotonic,
                 what: str = "request bodies", reason: str = "body_buffer",
                 paced: bool = True) -> None:
        self.what = what
        self.paced = paced
        self.reason = reason
        self.total = total
        self.per_client = per_client
        self.ipv6_prefix = ipv6_prefix
        self.slow_rate = slow_rate
        self.clock = clock
        self.held = 0
        self._clients: dict[str, int] = {}  # address -> bytes; entries at 0 are removed
        self._holds: dict[str, set[Hold]] = {}  # address -> its holds with bytes
        # (-bytes, address) each time a client's bytes changed; entries whose count is no
        # longer the client's are stale, skipped when the largest holder is looked for.
        self._largest: list[tuple[int, str]] = []

    def hold(self, address: str) -> Hold:
        """What is about to be read from the peer `address`, nothing charged yet."""
        return Hold(self, peer_key(address, self.ipv6_prefix))

    def _take(self, hold: Hold, size: int) -> None:
        client = hold.client
        mine = self._clients.get(client, 0)
        if mine + size > self.per_client:
            raise _refusal(f"this client is sending too many {self.what} at once", self.reason)
        if self.held + size > self.total:
            self._make_room(client, mine + size, self.held + size - self.total)
        self._clients[client] = mine + size
        self.held += size
        hold.held += size
        holds = self._holds.get(client)
        if holds is None:
            holds = self._holds[client] = set()
        holds.add(hold)
        self._push(client, mine + size)

    def _give(self, hold: Hold, size: int) -> None:
        client = hold.client
        hold.held -= size
        left = self._clients.get(client, 0) - size
        holds = self._holds.get(client)
        if holds is not None and not hold.held:
            holds.discard(hold)
        if left > 0:
            self._clients[client] = left
            self._push(client, left)
        else:
            self._clients.pop(client, None)
            self._holds.pop(client, None)
        self.held = max(0, self.held - size)

    def _cuttable(self, hold: Hold, now: float) -> bool:
        """Still being read, and stalled or slow of late (a burst, then a trickle, was
        fast on average): what a client holding memory sends. A fast upload ends soon
        by itself and is never cut off."""
        if hold.stop is None:
            return False
        if not self.paced:
            return True
        since, then = hold.marks[0]
        return now - hold.grew > STALLED or (
            now - since >= RECENT and hold.held - then < self.slow_rate * (now - since))

    def _make_room(self, client: str, wanted: int, over: int) -> None:
        """Free `over` bytes for `client`, who would then hold `wanted`, by cutting off
        slow holds of the clients above their fair share, largest holder first. Raises
        Unavailable, cutting nothing off, when `client` is past its own share or not
        enough can be cut off."""
        share = self.total // (len(self._clients) + (client not in self._clients))
        if wanted > share:
            raise self._full()
        now = self.clock()
        largest, cuts, looked, seen = self._largest, [], [], set()
        while over > 0:
            victim = self._top()
            if victim is None or victim == client or self._clients[victim] <= share:
                break
            looked.append(heapq.heappop(largest))
            if victim in seen:  # an entry of the same count pushed twice
                continue
            seen.add(victim)
            left = self._clients[victim]
            bodies = sorted((h for h in self._holds[victim] if self._cuttable(h, now)),
                            key=lambda h: h.held)
            # The smallest body that makes the room, else the largest ones first.
            enough = next((h for h in bodies if h.held >= over), None)
            for body in [enough] if enough is not None else reversed(bodies):
                if over <= 0 or left <= share:
                    break
                cuts.append(body)
                over -= body.held
                left -= body.held
        for entry in looked:
            heapq.heappush(largest, entry)
        if over > 0:
            raise self._full()
        for body in cuts:
            body.cut = True
            stop, body.stop = body.stop, None
            self._give(body, body.held)
            if stop is not None:  # cuttable: it has one
                stop()

    def _full(self) -> Unavailable:
        return _refusal(f"the server is receiving too many {self.what} at once", self.reason)

    def _push(self, client: str, held: int) -> None:
        largest = self._largest
        heapq.heappush(largest, (-held, client))
        if len(largest) > 64 + 4 * len(self._clients):  # mostly stale: rebuilt
            largest[:] = [(-size, name) for name, size in self._clients.items()]
            heapq.heapify(largest)

    def _top(self) -> str | None:
        """The client holding the most bytes now (None: nobody holds any)."""
        largest = self._largest
        while largest:
            size, client = largest[0]
            if self._clients.get(client) == -size:
                return client
            heapq.heappop(largest)
        return None


def _refusal(detail: str, reason: str) -> Unavailable:
    """503 with `Retry-After`, closing the connection (the rest of the request is unread)."""
    problem = Unavailable(detail, RETRY_AFTER, reason=reason)
    problem.headers.append((b"connection", b"close"))
    return problem

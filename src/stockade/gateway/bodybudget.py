"""`BodyBudget`: how many bytes of request bodies a gateway worker holds at once.

Bodies are read whole before a function's slots are taken (`Pipeline`), and each byte
received extends the deadline of its body (a minimum rate): a client that sends a body
all but its last byte, then waits, holds `max_body` bytes for `body_timeout` plus
`max_body / body_min_rate` seconds (about 17 minutes with the defaults). A few thousand
such connections, nearly free for the client, would take the worker's memory and every
tenant's requests with it. The budget bounds the bytes held, in total and per client
address (the peer's: the gateway never believes forwarding headers); a body that would
go past either is refused with 503 and `Retry-After`, and its connection is closed. A
client address is counted as the connection cap counts it (`connlimit.peer_key`): an IPv6
address as its /64 network, whose host could otherwise multiply its share by its
addresses.

Bytes are charged as they arrive and given back when the request's response is ready.
Used on the event loop thread only.
"""

from __future__ import annotations

from .connlimit import IPV6_PREFIX, peer_key
from .problem import Unavailable

__all__ = ["BodyBudget", "RETRY_AFTER"]

RETRY_AFTER = 5.0  # seconds: held bodies end within their deadline


class BodyBudget:
    """At most `total` bytes of bodies held, at most `per_client` of them for one client
    address (an IPv6 address counted as its `/ipv6_prefix` network)."""

    def __init__(self, total: int, per_client: int, ipv6_prefix: int = IPV6_PREFIX) -> None:
        self.total = total
        self.per_client = per_client
        self.ipv6_prefix = ipv6_prefix
        self.held = 0
        self._clients: dict[str, int] = {}  # address -> bytes; entries at 0 are removed

    def take(self, client: str, size: int) -> None:
        """Charge `size` bytes to the peer address `client`. Raises Unavailable (503) when
        that would go past either bound (nothing is charged then)."""
        client = peer_key(client, self.ipv6_prefix)
        mine = self._clients.get(client, 0)
        if mine + size > self.per_client:
            raise _refusal("this client is sending too many request bodies at once")
        if self.held + size > self.total:
            raise _refusal("the server is receiving too many request bodies at once")
        self._clients[client] = mine + size
        self.held += size

    def give(self, client: str, size: int) -> None:
        """Give back `size` bytes charged to `client`."""
        client = peer_key(client, self.ipv6_prefix)
        left = self._clients.get(client, 0) - size
        if left > 0:
            self._clients[client] = left
        else:
            self._clients.pop(client, None)
        self.held = max(0, self.held - size)


def _refusal(detail: str) -> Unavailable:
    """503 with `Retry-After`, closing the connection (the rest of the body is unread)."""
    problem = Unavailable(detail, RETRY_AFTER, reason="body_buffer")
    problem.headers.append((b"connection", b"close"))
    return problem

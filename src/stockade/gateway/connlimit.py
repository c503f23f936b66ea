"""`PeerConnections`: how many connections one client address holds open on a worker.

Without a cap one client can open connections until the worker runs out of file
descriptors (or the kernel's accept queue fills), and then nobody else is served: a
connection costs the client a socket and nothing more, and the head timeout
(`protocol.py`) only ends one that is slow to send its head, not one that sends a
request now and then on a kept-alive connection. `[server] max_connections_per_ip`
bounds the connections one peer address (the socket's, never a forwarding header)
holds on the whole server, counted in the table every worker shares (`conntable.py`);
one past it is answered 503 and closed at once, when
it is accepted, before anything is read from it. Each refusal is counted (`on_refused`,
the `stockade_gateway_connections_refused_total` metric); the log says so once per
address per `LOG_INTERVAL` seconds, with the count since, so a flood cannot flood the
log.

What counts as one address (`peer_key`): an IPv4 address; an IPv4-mapped IPv6 address
(`::ffff:a.b.c.d`, how a dual-stack socket shows an IPv4 client) or one of the NAT64
prefix (`64:ff9b::a.b.c.d`, an IPv4 client through a translator) is that IPv4 address;
any other IPv6 address is its `/ipv6_prefix` network (`[server]
max_connections_ipv6_prefix`, default 64). One host is given a whole /64 by its network
(SLAAC, privacy addresses): counted per full address, it could open its 2^64 addresses'
worth of connections.

The table tracks a fixed number of addresses (`[server] max_connection_addresses`):
when it is full a connection from an address it does not hold is refused the same way
(`on_full`, logged once per `LOG_INTERVAL`); addresses it holds are never refused for it.

Checked once per connection, not per request. Used on the event loop thread only.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from functools import lru_cache

from .conntable import AT_LIMIT, BUSY, FULL, Column

__all__ = ["PeerConnections", "REFUSAL", "LOG_INTERVAL", "IPV6_PREFIX", "peer_key", "ipv4_of"]

logger = logging.getLogger("stockade.gateway")
LOG_INTERVAL = 10.0  # seconds between log lines about one address
LOG_LINES = 10  # lines about refusals per LOG_INTERVAL, all addresses together
# What a refused connection is sent before it is closed.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\n"
           b"connection: close\r\n\r\n")
IPV6_PREFIX = 64  # the IPv6 network one host is given: counted as one address


_UNKNOWN = b"\xff" * 16  # no address (a multicast prefix: never a peer's)
# The well-known NAT64 prefix: such a peer is the IPv4 client in its last 32 bits (each
# one counted apart, as it would be without the translator in between).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@lru_cache(maxsize=4096)  # on every accept; a hit costs a dict lookup, a miss 4-10 µs
def _peer(address: str, ipv6_prefix: int) -> tuple[str, bytes]:
    if ":" not in address:
        try:
            return address, ipaddress.IPv6Address(f"::ffff:{address}").packed
        except ValueError:
            return address, _UNKNOWN
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address, _UNKNOWN
    mapped = ipv4_of(ip)
    if mapped is not None:  # one cell for an IPv4 client however it is written
        return str(mapped), ipaddress.IPv6Address(f"::ffff:{mapped}").packed
    # By its integer: a link-local address's scope id (`%eth0`) does not split it.
    host_bits = 128 - ipv6_prefix
    network = ipaddress.IPv6Address(int(ip) >> host_bits << host_bits)
    return f"{network}/{ipv6_prefix}", network.packed


def ipv4_of(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 peer address stands for: IPv4-mapped (a dual-stack
    socket's) or of the NAT64 prefix (a translator's); None for any other."""
    mapped = ip.ipv4_mapped
    if mapped is None and ip in _NAT64:
        mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return mapped


def peer_key(address: str, ipv6_prefix: int = IPV6_PREFIX) -> str:
    """The address `address` is counted as: an IPv4 address as it is (also when written
    IPv4-mapped, `::ffff:1.2.3.4`), an IPv6 address as its `/ipv6_prefix` network
    (`2001:db8::/64`). Anything else (a Unix socket's empty name) as it is."""
    return _peer(address, ipv6_prefix)[0]


class PeerConnections:
    """At most `limit` open connections per peer address server-wide (as `peer_key`
    counts them), counted in `column` of the shared table; `on_refused()` is called for
    each connection refused for the cap, `on_full()` for each refused for a full table."""

    def __init__(self, limit: int, column: Column,
                 on_refused: Callable[[], None] | None = None,
                 ipv6_prefix: int = IPV6_PREFIX,
                 on_full: Callable[[], None] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_connections_per_ip: expected at least 1, not {limit}")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"max_connections_ipv6_prefix: expected 1 to 128, not "
                             f"{ipv6_prefix}")
        self.limit = limit
        self.ipv6_prefix = ipv6_prefix
        self.column = column
        self._on_refused = on_refused
        self._on_full = on_full
        self._logged: dict[str, tuple[float, int]] = {}  # address -> (last line, since)
        self._window = (-LOG_INTERVAL, 0, 0)  # (start, lines written, refusals not logged)

    def open(self, address: str) -> int | None:
        """A connection from `address` was accepted: the cell it is counted in until
        `close`, or None when it must be refused (its address holds `limit` already, or
        the table is full and does not hold it)."""
        name, key = _peer(address, self.ipv6_prefix)
        cell = self.column.acquire(key, self.limit)
        if cell >= 0:
            return cell
        if cell == AT_LIMIT:
            if self._on_refused is not None:
                self._on_refused()
            self._log(name, "%s holds %d connections (max_connections_per_ip): a "
                      "connection was refused with 503%s", name or "a local client",
                      self.limit)
        elif cell == FULL:
            if self._on_full is not None:
                self._on_full()
            self._log("\0full", "the connection table holds all the addresses it can (about %d, "
                      "max_connection_addresses): a connection from a new address was "
                      "refused with 503%s", self.column.table.cells // 2)
        elif cell == BUSY:
            if self._on_full is not None:
                self._on_full()
            self._log("\0busy", "the connection table's lock is held by another process: a "
                      "connection from a new address was refused with 503%s")
        return None

    def close(self, cell: int) -> None:
        """A connection `open` counted at `cell` has ended."""
        self.column.release(cell)

    def held(self, address: str) -> int:
        """The connections counted now, server-wide, for `address` (with every other
        address of its IPv6 network, or its IPv4-mapped twin)."""
        return self.column.table.held(_peer(address, self.ipv6_prefix)[1])

    def _log(self, subject: str, message: str, *args: object) -> None:
        """`message` (its last `%s`: how many more since) at most once per
        `LOG_INTERVAL` for `subject`, and `LOG_LINES` times for all subjects together:
        clients refused from many addresses write no more than from a few."""
        now = time.monotonic()
        last, since = self._logged.get(subject, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL:
            self._logged[subject] = (last, since + 1)
            return
        start, lines, left_out = self._window
        if now - start >= LOG_INTERVAL:
            start, lines = now, 0
        if lines >= LOG_LINES:
            self._window = (start, lines, left_out + 1)
            return
        self._window = (start, lines + 1, 0)
        if len(self._logged) >= 4096:  # bounded: forget addresses not refused lately
            self._logged = {a: e for a, e in self._logged.items() if now - e[0] < LOG_INTERVAL}
            if len(self._logged) >= 4096:
                self._logged.clear()
        self._logged[subject] = (now, 0)
        more = f" ({since} more refused since the last line)" if since else ""
        if left_out:
            more += f" ({left_out} refusals of other addresses not logged)"
        logger.warning(message, *args, more)

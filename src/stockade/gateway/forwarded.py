"""`TrustedProxies`: the client behind a proxy, as a function's breaker counts it.

Behind a load balancer every request comes from the balancer's address: one client's
violations would count once for everyone (the function's breaker never opens) and its
refusal (`clientbreaker.py`) would refuse everyone on that worker. `[server]
trusted_proxies` names the networks whose `X-Forwarded-For` is believed. The list is
read from the right, where each proxy appended the address it saw: the first address
that is not a trusted proxy's is the client. Anything left of it was written by the
client and is never believed; a request whose peer is not a trusted proxy keeps its
peer's address whatever its headers say; an entry that is not an address (`unknown`,
an obfuscated name) ends the walk at the last trusted hop.

Only the breakers use it: connection caps and body budgets count sockets, which are
the proxy's. At most `MAX_HOPS` entries are read, however long the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from .connlimit import ipv4_of

if TYPE_CHECKING:
    from .messages import Headers

__all__ = ["TrustedProxies", "MAX_HOPS", "parse_networks"]

MAX_HOPS = 16  # entries read from the right of X-Forwarded-For
MAX_NETWORKS = 256

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(value: object) -> tuple[str, ...]:
    """A list of addresses or networks (`10.0.0.0/8`, `2001:db8::1`), normalized; an
    IPv4-mapped one (`::ffff:10.0.0.0/104`) as IPv4, as peers are compared. Raises
    ValueError for anything else, for host bits set (`10.0.0.1/8`: a typo widened
    silently would believe more than meant), and for a /0 (every client's word)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of addresses or networks, not {value!r}")
    if len(value) > MAX_NETWORKS:
        raise ValueError(f"at most {MAX_NETWORKS} networks, not {len(value)}")
    networks: list[_Network] = []
    for text in value:
        try:
            network = ipaddress.ip_network(text.strip())
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 \
                and network.network_address.ipv4_mapped is not None:
            network = ipaddress.IPv4Network(
                f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
        if network.prefixlen == 0:
            raise ValueError(f"{text!r} would believe every client's X-Forwarded-For")
        networks.append(network)
    return tuple(network.compressed for network in networks)


# Longer than any address with a port: `[` IPv6 with an IPv4 tail and a 16-byte zone `]:65535`.
_LONGEST_ADDRESS = 80


def _address(text: str) -> _Address | None:
    """An address as a peer or a forwarding entry writes it (`1.2.3.4`, `1.2.3.4:80`,
    `[2001:db8::1]:80`, `::ffff:1.2.3.4`), IPv4-mapped and NAT64 ones as IPv4; None
    otherwise. Longer text is no address, and is not remembered: a forwarding entry a
    client wrote could be most of a 64 KiB head (found by review)."""
    return None if len(text) > _LONGEST_ADDRESS else _parsed_address(text)


@lru_cache(maxsize=1024)
def _parsed_address(text: str) -> _Address | None:
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return ipv4_of(address) or address  # as the per-client counts see it
    return address


class TrustedProxies:
    """The networks of `[server] trusted_proxies`; `client` finds who is behind them."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks)

    def trusted(self, address: _Address) -> bool:
        return any(address in network for network in self.networks)

    def trusts(self, peer: str) -> bool:
        """Whether `peer` (an address as a connection names it) is a trusted proxy."""
        address = _address(peer)
        return address is not None and self.trusted(address)

    def client(self, peer: str, headers: Headers) -> str:
        """The client's address: `peer`'s, unless `peer` is a trusted proxy and its
        `X-Forwarded-For` names one beyond (see the module docstring)."""
        address = _address(peer)
        if address is None or not self.trusted(address):
            return peer
        values = [value for name, value in headers if name == b"x-forwarded-for"]
        if not values:
            return peer
        hops = b",".join(values).rsplit(b",", MAX_HOPS)[-MAX_HOPS:]
        for hop in reversed(hops):
            address = _address(hop.strip().decode("latin-1"))
            if address is None:
                break  # not an address: the last trusted hop is all we know
            if not self.trusted(address):
                return str(address)
            peer = str(address)
        return peer

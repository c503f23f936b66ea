"""`ClientBreakers`: a client whose runs keep hitting a limit is refused alone, for the
cooldown; other clients, and its other functions, are not; memory stays bounded."""

from __future__ import annotations

import time

import pytest

from stockade.gateway.clientbreaker import ClientBreakers
from stockade.gateway.problem import TooManyRequests
from stockade.telemetry import BreakerConfig

CONFIG = BreakerConfig(threshold=3, window=60, cooldown=30)


def test_a_client_at_the_threshold_is_refused_alone() -> None:
    clients = ClientBreakers(CONFIG)
    for _ in range(2):
        clients.violated("f", "t", "10.0.0.1")
    clients.check("f", "t", "10.0.0.1")  # two: still served
    clients.violated("f", "t", "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        clients.check("f", "t", "10.0.0.1")
    assert refused.value.http_status == 429
    assert refused.value.extra["limit"] == "client_breaker"
    assert refused.value.extra["retry_after"] == 30
    assert "refused for 30 s" in str(refused.value)
    clients.check("f", "t", "10.0.0.2")  # another client
    clients.check("g", "t", "10.0.0.1")  # another function
    clients.check("f", "u", "10.0.0.1")  # another tenant's function of that name
    clients.check("f", "t", None)  # no address: never refused here


def test_violations_further_apart_than_the_window_do_not_add_up() -> None:
    clients = ClientBreakers(BreakerConfig(threshold=2, window=0.05, cooldown=30))
    clients.violated("f", "t", "10.0.0.1")
    time.sleep(0.1)
    clients.violated("f", "t", "10.0.0.1")
    clients.check("f", "t", "10.0.0.1")


def test_the_refusal_ends_after_the_cooldown() -> None:
    clients = ClientBreakers(BreakerConfig(threshold=1, window=60, cooldown=0.05))
    clients.violated("f", "t", "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        clients.check("f", "t", "10.0.0.1")
    assert "refused for 1 s" in str(refused.value)  # never "0 s"
    time.sleep(0.1)
    clients.check("f", "t", "10.0.0.1")


def test_an_ipv6_client_is_its_48_network() -> None:
    """Attack: a holder of one /48 has 65,536 /64s; counted by /64 it alone would be the
    three clients that open a function's breaker for everyone."""
    clients = ClientBreakers(CONFIG)
    sources = {clients.source(f"2001:db8:0:{net:x}::{host:x}")
               for net in range(0, 65536, 4099) for host in (1, 0xFFFF)}
    assert sources == {"2001:db8::/48"}
    assert clients.source("2001:db8:1::1") != clients.source("2001:db8::1")
    # IPv4 clients through a NAT64 translator are each their IPv4 address.
    assert clients.source("64:ff9b::c000:201") == "192.0.2.1"
    assert clients.source("64:ff9b::c000:202") == "192.0.2.2"


def test_only_the_clients_host_network_is_refused() -> None:
    """A client is refused by its /64 (its host's network), not its /48: its neighbours
    in the /48 are served; the /48 still counts once toward the function's breaker."""
    clients = ClientBreakers(CONFIG)
    for _ in range(3):
        clients.violated("f", "t", "2001:db8:0:1::1")
    with pytest.raises(TooManyRequests):
        clients.check("f", "t", "2001:db8:0:1::ffff")  # the same /64
    clients.check("f", "t", "2001:db8:0:2::1")  # a neighbour's
    assert clients.source("::ffff:10.0.0.1") == clients.source("10.0.0.1") == "10.0.0.1"
    assert clients.source(None) is None and clients.source("") is None


def test_a_flood_of_addresses_keeps_memory_bounded() -> None:
    clients = ClientBreakers(BreakerConfig(threshold=1, window=60, cooldown=30), kept=16)
    for index in range(10_000):
        clients.violated("f", "t", f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}")
    assert len(clients._violations) <= 16 and len(clients._open) <= 16
    with pytest.raises(TooManyRequests):  # the latest are still refused
        clients.check("f", "t", "10.0.39.15")

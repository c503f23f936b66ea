"""`TrustedProxies`: the client behind a trusted proxy, as a hostile client would try to
choose it: forged headers from outside, forged entries left of the proxy's, garbage
and very long headers."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from stockade.errors import PolicyError
from stockade.gateway.forwarded import MAX_HOPS, TrustedProxies, parse_networks
from stockade.gateway.settings import parse_server

PROXIES = TrustedProxies(parse_networks(["10.0.0.0/8", "2001:db8:aa::/48"]))


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), *((b"x-forwarded-for", v.encode()) for v in values)]


def test_a_trusted_proxys_client_is_the_address_it_appended() -> None:
    assert PROXIES.client("10.1.2.3", xff("198.51.100.7")) == "198.51.100.7"
    assert PROXIES.client("::ffff:10.1.2.3", xff("198.51.100.7")) == "198.51.100.7"
    assert PROXIES.client("64:ff9b::10.1.2.3", xff("198.51.100.7")) == "198.51.100.7"
    assert PROXIES.client("2001:db8:aa::5", xff("2001:db8:bb::9")) == "2001:db8:bb::9"
    # Through two trusted proxies: the address the outer one saw.
    assert PROXIES.client("10.0.0.1", xff("198.51.100.7, 10.9.9.9")) == "198.51.100.7"
    # Header lines are one list, in order.
    assert PROXIES.client("10.0.0.1", xff("198.51.100.7", "10.9.9.9")) == "198.51.100.7"
    # Ports and brackets, as some proxies write them.
    assert PROXIES.client("10.0.0.1", xff("198.51.100.7:4711")) == "198.51.100.7"
    assert PROXIES.client("10.0.0.1", xff("[2001:db8:cc::1]:80")) == "2001:db8:cc::1"
    assert PROXIES.client("10.0.0.1", []) == "10.0.0.1"  # no header: the proxy itself


def test_a_client_cannot_choose_its_address() -> None:
    # Not through a trusted proxy: the header is the client's own words.
    assert PROXIES.client("198.51.100.7", xff("203.0.113.1")) == "198.51.100.7"
    assert PROXIES.client("192.168.1.1", xff("10.0.0.1")) == "192.168.1.1"
    # Through one: everything left of the proxy's own entry is the client's.
    assert PROXIES.client("10.0.0.1", xff("203.0.113.1, 10.0.0.2, 198.51.100.7")) \
        == "198.51.100.7"
    # Garbage where the proxy's entry should be: the proxy is all that is known.
    for junk in ("unknown", "_hidden", "", "1.2.3.4.5", "\xff" * 40, "[::1", "::1]:8"):
        assert PROXIES.client("10.0.0.1", xff(f"198.51.100.7, {junk}")) == "10.0.0.1"
    assert PROXIES.client("10.0.0.1", xff("198.51.100.7, junk, 10.0.0.2")) == "10.0.0.2"


def test_a_long_header_is_read_only_from_its_end() -> None:
    hops = ", ".join(["10.0.0.9"] * 100_000)
    assert PROXIES.client("10.0.0.1", xff(f"198.51.100.7, {hops}")) == "10.0.0.9"
    assert PROXIES.client("10.0.0.1", xff(", ".join(["10.0.0.9"] * (MAX_HOPS - 1))
                                          + ", 198.51.100.7")) == "198.51.100.7"


def test_trusted_proxies_in_the_manifest() -> None:
    settings = parse_server({"trusted_proxies": [
        "10.0.0.1", "2001:db8::/32", "::ffff:192.168.0.0/112"]}, "m.toml")
    assert settings.trusted_proxies == ("10.0.0.1/32", "2001:db8::/32", "192.168.0.0/16")
    # An IPv4-mapped entry matches the peers it names (they are compared as IPv4).
    proxies = TrustedProxies(settings.trusted_proxies)
    assert proxies.client("::ffff:192.168.3.4", xff("198.51.100.7")) == "198.51.100.7"
    for bad in ("10.0.0.0/8", ["nope"], ["10.0.0.0/33"], [1], ["10.0.0.0/8"] * 257,
                ["10.0.0.1/8"], ["0.0.0.0/0"], ["::/0"], ["::ffff:0.0.0.0/96"]):
        with pytest.raises(PolicyError, match="server.trusted_proxies"):
            parse_server({"trusted_proxies": bad}, "m.toml")


def test_long_forwarding_entries_are_not_remembered() -> None:
    # A trusted proxy passing on what a client wrote as the last hop: 60 KB entries,
    # each kept as a key of the address cache (1,024 of them: 60 MB per worker).
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(200):
            hop = f"{index:08d}" + "1" * 60_000
            assert PROXIES.client("10.1.2.3", xff(hop)) == "10.1.2.3"
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 120_000, kept  # it kept 200 x 60 KB
    assert PROXIES.client("10.1.2.3", xff("[2001:db8::1]:65535")) == "2001:db8::1"

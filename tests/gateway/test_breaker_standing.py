"""Attack: clients at `threshold + 1` rotated addresses keep a function's breaker open for
everyone. Three addresses' violations open it; when it half-opens, a fresh address takes
the probe and violates again (it is not among the clients the breaker remembers), and
so on: with a handful of addresses, and addresses forgotten after a window and a
cooldown, the function answered 503 to all its clients for as long as the attack went
on. A client whose last run of the function was clean, within `STANDING` seconds, and
which hit no limit since, is not refused by the breaker: the attack reaches only clients
the function has not served (on the local state and on a shared Redis)."""

from __future__ import annotations

import time
from pathlib import Path

from stockade.gateway.clientbreaker import STANDING, ClientBreakers
from stockade.telemetry.breaker import BreakerConfig

from .conftest import breaker_gateway, client_at, unavailable_reason, violate
from .test_breaker_probe import probe_manifest

COOLDOWN = 2.0


def test_rotated_addresses_keep_the_breaker_open_only_for_clients_never_served(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    gateway = breaker_gateway(tmp_path, shared_cache, probe_manifest(state), COOLDOWN)
    clean = {"kind": "none"}
    try:
        with client_at(gateway.url, "127.0.0.2") as known, \
                client_at(gateway.url, "127.0.0.3") as newcomer:
            assert known.get("/fail", params=clean).status_code == 200  # served before
            violate(gateway.url)  # 127.0.0.11-13: the breaker opens
            time.sleep(0.2)  # admissions Redis granted ahead (`state.credit`) run out
            assert unavailable_reason(newcomer.get("/fail", params=clean)) == "breaker"
            assert known.get("/fail", params=clean).status_code == 200
            for fresh in (20, 21):  # each half-open probe taken by a fresh address
                time.sleep(COOLDOWN + 0.3)
                with client_at(gateway.url, f"127.0.0.{fresh}") as attacker:
                    assert attacker.get("/fail", params={"kind": "flood"}).status_code == 502
                time.sleep(0.2)
                assert unavailable_reason(newcomer.get("/fail", params=clean)) == "breaker"
                assert known.get("/fail", params=clean).status_code == 200
            # A served client that hits a limit while the breaker is open runs once, and
            # is refused from then on: its standing goes with its violation.
            assert known.get("/fail", params={"kind": "flood"}).status_code == 502
            time.sleep(0.2)
            assert unavailable_reason(known.get("/fail", params=clean)) == "breaker"
    finally:
        gateway.stop()


def test_standing_is_a_clean_run_within_its_time_and_no_violation_since() -> None:
    clients = ClientBreakers(BreakerConfig(threshold=2, window=60, cooldown=30), kept=2)
    one, two, three = (clients.source(f"10.0.0.{n}") for n in (1, 2, 3))
    assert not clients.in_standing("f", "t", one)
    clients.ran_clean("f", "t", one)
    assert clients.in_standing("f", "t", one)
    assert not clients.in_standing("g", "t", one)  # per function
    assert not clients.in_standing("f", "t", two)  # per client
    assert not clients.in_standing("f", "t", None)
    clients.violated("f", "t", "10.0.0.1")  # one violation, under the threshold: gone
    assert not clients.in_standing("f", "t", one)
    clients.ran_clean("f", "t", one)
    assert clients.in_standing("f", "t", one)
    clients.ran_clean("f", "t", two)
    clients.ran_clean("f", "t", three)  # `kept` entries: the oldest is forgotten
    assert not clients.in_standing("f", "t", one)
    assert clients.in_standing("f", "t", three)
    clients._clean[("f", "t", three)] -= STANDING + 1  # its clean run is too old
    assert not clients.in_standing("f", "t", three)


def test_one_network_holds_one_standing_and_loses_it_from_any_of_its_addresses() -> None:
    """Attack: clean runs from 4,096 addresses of one IPv6 /64 filled the table and
    pushed out the standing of every other client, whom rotated addresses could then
    keep out again. A network counts as one client, as to the function's breaker."""
    clients = ClientBreakers(BreakerConfig(threshold=2, window=60, cooldown=30), kept=16)
    served = clients.source("192.0.2.7")
    clients.ran_clean("f", "t", served)
    for host in range(5000):
        clients.ran_clean("f", "t", clients.source(f"2001:db8:1:2::{host:x}"))
    assert clients.in_standing("f", "t", served)
    assert clients.in_standing("f", "t", clients.source("2001:db8:1:ffff::1"))  # its /48
    clients.violated("f", "t", "2001:db8:1:2::1")
    assert not clients.in_standing("f", "t", clients.source("2001:db8:1:2::2"))

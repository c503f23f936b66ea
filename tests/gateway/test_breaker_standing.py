"""Attack: clients at `threshold + 1` rotated addresses keep a function's breaker open for
everyone. Three addresses' violations open it; when it half-opens, a fresh address takes
the probe and violates again (it is not among the clients the breaker remembers), and
so on: with a handful of addresses, and addresses forgotten after a window and a
cooldown, the function answered 503 to all its clients for as long as the attack went
on. A client whose last run of the function was clean, within `STANDING` seconds, and
which hit no limit since, is not refused by the breaker: the attack reaches only clients
the function has not served (on the local state and on a shared Redis)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from stockade.gateway.clientbreaker import ClientBreakers
from stockade.gateway.standing import STANDING, Standing
from stockade.telemetry.breaker import BreakerConfig

from .conftest import breaker_gateway, client_at, module, unavailable_reason, violate
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


def _status(url: str, params: dict[str, str], source: str = "127.0.0.2",
            forwarded: str | None = None, path: str = "/fail") -> int:
    """One request's status, from `source` (and as `forwarded` by a trusted proxy)."""
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    with client_at(url, source) as client:
        return client.get(path, params=params, headers=headers).status_code


def _beside(work: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


def test_a_clean_run_beside_each_violation_does_not_keep_the_standing(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    """Attack (review): standing was checked at admission and ended when a violating
    run ended, so a clean run in flight beside each violation gave it again, and a
    client served once ran an input hitting a limit as often as it liked while the
    breaker was open. Now one request at a time holds it, and a run admitted before the
    client's violation gives none."""
    gateway = breaker_gateway(tmp_path, shared_cache, probe_manifest(state, timeout=4.0), 30.0)
    url, statuses = gateway.url, []
    try:
        assert _status(url, {"kind": "none"}) == 200
        violate(url)
        time.sleep(0.2)  # admissions Redis granted ahead (`state.credit`) run out
        for _ in range(3):
            clean, out = _beside(lambda: _status(url, {"kind": "sleep", "s": "1"}))
            time.sleep(0.3)
            statuses.append(_status(url, {"kind": "flood"}))
            clean.join()
            statuses += out
        assert statuses.count(502) <= 1, statuses
        assert _status(url, {"kind": "none"}, "127.0.0.3") == 503  # still open
    finally:
        gateway.stop()


def test_a_burst_from_a_client_in_standing_runs_one_request(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    """Attack (review): every request a client in standing sent at once got past the
    open breaker, each running to its timeout."""
    gateway = breaker_gateway(tmp_path, shared_cache, probe_manifest(state, timeout=4.0), 30.0)
    url = gateway.url
    try:
        assert _status(url, {"kind": "none"}) == 200
        violate(url)
        time.sleep(0.2)
        burst = [_beside(lambda: _status(url, {"kind": "sleep", "s": "20"}))
                 for _ in range(4)]
        for thread, _ in burst:
            thread.join()
        assert sorted(out[0] for _, out in burst) == [503, 503, 503, 504]
    finally:
        gateway.stop()


def test_one_network_rotating_its_hosts_gets_one_violation_past_the_breaker(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    """Attack (review): standing is kept per /48 and a client refused per /64; a /48
    served once ran violations from host after host, with no bound."""
    text = probe_manifest(state, 'trusted_proxies = ["127.0.0.1"]', timeout=4.0)
    gateway = breaker_gateway(tmp_path, shared_cache, text, 30.0)
    url, got = gateway.url, []
    try:
        assert _status(url, {"kind": "none"}, "127.0.0.1", "2001:db8:1::1") == 200
        for network in (2, 3, 4):  # three other /48s open the breaker
            assert _status(url, {"kind": "flood"}, "127.0.0.1",
                           f"2001:db8:{network}::1") == 502
        time.sleep(0.2)
        for host in range(1, 7):
            clean, _ = _beside(lambda: _status(url, {"kind": "sleep", "s": "1"}, "127.0.0.1",
                                               "2001:db8:1:ffff::1"))
            time.sleep(0.3)
            got.append(_status(url, {"kind": "flood"}, "127.0.0.1",
                               f"2001:db8:1:{host:x}::1"))
            clean.join()
        assert got.count(502) <= 1, got
    finally:
        gateway.stop()


def test_a_waiting_request_that_never_ran_keeps_its_clients_standing(
        tmp_path: Path, shared_cache: Path) -> None:
    """Attack (second review): a request that waited for a guest thread past its backstop
    (504, its run never begun) spent its client's ticket, being charged the whole
    timeout as if it had run: another client holding the only thread with long clean
    runs of any function refused everyone the function had served, as before standing."""
    text = probe_manifest("", timeout=2.0, threads=1) + f"""
[[function]]
name = "slow"
route = "/slow"
module = "{module("fail")}"
[function.limits]
timeout = "20s"
"""
    gateway = breaker_gateway(tmp_path, shared_cache, text, 30.0)
    url = gateway.url
    slow = {"kind": "sleep", "s": "0.2"}  # too slow to finish inline: it waits a thread
    try:
        assert _status(url, slow) == 200
        violate(url)
        time.sleep(0.2)
        holder, _ = _beside(lambda: _status(url, {"kind": "sleep", "s": "6"}, "127.0.0.40",
                                            path="/slow"))
        time.sleep(0.5)
        assert _status(url, slow) == 504  # it waited out its backstop, never ran
        holder.join()
        assert _status(url, {"kind": "none"}) == 200
    finally:
        gateway.stop()


def test_a_ticket_is_taken_by_one_request_and_settled_by_it() -> None:
    standing, now = Standing(kept=2), time.monotonic()
    assert standing.take("f", "t", "10.0.0.1", now) is None
    standing.ran_clean("f", "t", "10.0.0.1", now)
    held = standing.take("f", "t", "10.0.0.1", now)
    assert held is not None
    assert standing.take("f", "t", "10.0.0.1", now) is None  # one request at a time
    standing.settle("f", "t", "10.0.0.1", held, ran=False)  # refused before its run
    held = standing.take("f", "t", "10.0.0.1", now)
    assert held is not None
    standing.settle("f", "t", "10.0.0.1", held, ran=True)  # a trap: spent
    assert standing.take("f", "t", "10.0.0.1", now) is None
    standing.ran_clean("f", "t", "10.0.0.1", now)
    held = standing.take("f", "t", "10.0.0.1", now)
    assert held is not None
    standing.ran_clean("f", "t", "10.0.0.1", now)  # its run exited: renewed, still held
    assert standing.take("f", "t", "10.0.0.1", now) is None
    standing.settle("f", "t", "10.0.0.1", held, ran=True)  # then given again
    assert standing.take("f", "t", "10.0.0.1", now) is not None
    assert standing.take("g", "t", "10.0.0.1", now) is None  # per function
    assert standing.take("f", "u", "10.0.0.1", now) is None  # and tenant
    assert standing.take("f", "t", None, now) is None
    standing.ran_clean("f", "t", "10.0.0.2", now)
    assert standing.take("f", "t", "10.0.0.2", now + STANDING + 1) is None  # expired


def test_clean_runs_beside_a_held_ticket_hand_out_no_second_one() -> None:
    """Attack (third review): clean runs of a client admitted while the breaker was
    closed each ended by handing out a fresh ticket while another request still held
    one, and settling the old one overwrote a newer holder's place: several requests of
    one client past the open breaker at once."""
    standing, now = Standing(kept=8), time.monotonic()
    standing.ran_clean("f", "t", "10.0.0.1", now)
    first = standing.take("f", "t", "10.0.0.1", now)
    assert first is not None
    standing.ran_clean("f", "t", "10.0.0.1", now)  # another run beside it
    standing.ran_clean("f", "t", "10.0.0.1", now)
    assert standing.take("f", "t", "10.0.0.1", now) is None
    standing.violated("f", "t", "10.0.0.1")  # the holder's run hit a limit
    standing.settle("f", "t", "10.0.0.1", first, ran=True)
    assert standing.take("f", "t", "10.0.0.1", time.monotonic()) is None


def test_a_violation_ends_the_ticket_and_what_runs_admitted_before_it_give() -> None:
    standing = Standing(kept=8)
    admitted = time.monotonic()
    standing.ran_clean("f", "t", "10.0.0.1", admitted)
    held = standing.take("f", "t", "10.0.0.1", admitted)
    assert held is not None
    standing.violated("f", "t", "10.0.0.1")
    standing.settle("f", "t", "10.0.0.1", held, ran=False)  # taken before the violation
    standing.ran_clean("f", "t", "10.0.0.1", admitted)  # a run admitted before it
    assert standing.take("f", "t", "10.0.0.1", time.monotonic()) is None
    standing.ran_clean("f", "t", "10.0.0.1", time.monotonic())  # admitted after it
    assert standing.take("f", "t", "10.0.0.1", time.monotonic()) is not None


def test_forgetting_a_violation_gives_no_ticket_to_a_run_admitted_before_it() -> None:
    """Attack (second review): violations of other sources pushed a client's mark out,
    and its long clean run admitted before its own violation then gave it a ticket."""
    standing = Standing(kept=4)
    admitted = time.monotonic()
    standing.violated("f", "t", "10.0.0.1")
    for host in range(10):
        standing.violated("f", "t", f"10.0.1.{host}")
    standing.ran_clean("f", "t", "10.0.0.1", admitted)
    assert standing.take("f", "t", "10.0.0.1", time.monotonic()) is None


def test_a_full_table_pushes_out_no_live_ticket() -> None:
    """Attack (second review): one clean run from each of 4,096 sources, then the breaker
    opened: every client served before them had been pushed out, and was refused."""
    standing, now = Standing(kept=16), time.monotonic()
    standing.ran_clean("f", "t", "192.0.2.7", now)
    for host in range(100):
        standing.ran_clean("f", "t", f"10.0.0.{host}", now)
    held = standing.take("f", "t", "192.0.2.7", now)
    assert held is not None  # kept: first served
    assert standing.take("f", "t", "10.0.0.99", now) is None  # no place was left for it
    tickets = standing._tickets[("f", "t")]
    tickets["10.0.0.0"] -= STANDING + 1  # behind the held front: expired, it makes room
    standing.ran_clean("f", "t", "10.0.0.99", now)
    assert standing.take("f", "t", "10.0.0.99", now) is not None
    standing.settle("f", "t", "192.0.2.7", held, ran=False)
    assert standing.take("f", "t", "192.0.2.7", now) is not None


def test_another_functions_clients_never_push_a_client_out() -> None:
    """Attack (review): one table for every function and tenant: 4,096 clean runs of
    another tenant's function pushed out the standing of a function's clients."""
    standing, now = Standing(kept=16), time.monotonic()
    standing.ran_clean("f", "t", "192.0.2.7", now)
    for host in range(5000):
        standing.ran_clean("cheap", "other", f"10.0.{host >> 8}.{host & 255}", now)
    assert standing.take("f", "t", "192.0.2.7", now) is not None


def test_one_network_holds_one_ticket_and_loses_it_from_any_of_its_hosts() -> None:
    """Attack: clean runs from 4,096 addresses of one IPv6 /64 filled the table and
    pushed out the standing of every other client, whom rotated addresses could then
    keep out again. A network counts as one client, as to the function's breaker."""
    clients = ClientBreakers(BreakerConfig(threshold=2, window=60, cooldown=30), kept=16)
    now = time.monotonic()
    clients.standing.ran_clean("f", "t", clients.source("192.0.2.7"), now)
    for host in range(5000):
        clients.standing.ran_clean("f", "t", clients.source(f"2001:db8:1:2::{host:x}"), now)
    assert clients.standing.take("f", "t", clients.source("192.0.2.7"), now) is not None
    clients.violated("f", "t", "2001:db8:1:2::1")
    assert clients.standing.take("f", "t", clients.source("2001:db8:1:ffff::1"), now) is None

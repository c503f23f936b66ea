"""Attack: a client fills the queue whenever a function's breaker half-opens, so the
probe the breaker grants is refused before it runs. Counted as a failed probe, that
held the breaker open for another cooldown each time, for as long as the client kept
at it; a probe that never ran proves nothing and is freed instead, so the very next
request probes (on the local state and on a shared Redis)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from .conftest import breaker_gateway, client_at, module, unavailable_reason, violate

COOLDOWN = 6.0
HOLD = 3.0  # how long the attacker's request holds the only guest thread


def _manifest(state: str) -> str:
    fail = module("fail")
    return f"""
[server]
workers = 1
threads = 1
max_queue = 0
{state}

[[function]]
name = "fail"
route = "/fail"
module = "{fail}"
max_response = "64KiB"

[[function]]
name = "hold"
route = "/hold"
module = "{fail}"
"""


def test_a_probe_refused_before_it_ran_is_freed_for_the_next_request(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    gateway = breaker_gateway(tmp_path, shared_cache, _manifest(state), COOLDOWN)
    try:
        client = gateway.client
        violate(gateway.url)  # three clients' limit violations: the breaker opens
        time.sleep(0.1)  # admissions Redis granted ahead (`state.credit`) run out
        assert unavailable_reason(client.get("/fail", params={"kind": "none"})) == "breaker"
        time.sleep(COOLDOWN + 0.5)  # half-open: the next request is the probe
        # The attacker holds the only guest thread and nothing may queue: the probe (a
        # sleeper, too long to finish inline) is granted by the breaker, refused by the
        # queue.
        held: list[int] = []
        holder = threading.Thread(target=lambda: held.append(httpx.get(
            f"{gateway.url}/hold", params={"kind": "sleep", "s": f"{HOLD:g}"},
            timeout=30.0).status_code))
        holder.start()
        time.sleep(1.0)
        probe = client.get("/fail", params={"kind": "sleep", "s": "1"})
        assert unavailable_reason(probe) == "queue", probe.text
        holder.join()
        assert held == [200]
        # Well within a cooldown of the refused probe: freed, the next request probes,
        # runs clean and closes the breaker (a failed probe would refuse it till then).
        answer = client.get("/fail", params={"kind": "none"})
        assert answer.status_code == 200, answer.text
        assert client.get("/fail", params={"kind": "none"}).status_code == 200
    finally:
        gateway.stop()


PROBE_TIMEOUT = 8.0  # the function's timeout: how long the failing probe stays out


def probe_manifest(state: str, server: str = "", timeout: float = PROBE_TIMEOUT,
                   threads: int = 4) -> str:
    """`fail` with `timeout` seconds and `threads` guest threads, under `[server]` lines
    `server` and the manifest's `[state]` (`state`)."""
    return f"""
[server]
workers = 1
threads = {threads}
{server}
{state}

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
max_response = "64KiB"

[function.limits]
timeout = "{timeout:g}s"
"""


SHORT_COOLDOWN = 3.0


def test_only_the_probe_closes_a_half_open_breaker(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    """Attack: a run admitted while the breaker was closed ends cleanly while the
    half-open probe (a run that fails again) is still out. Taken as the probe's verdict,
    it closed the breaker of a function that still fails, and every request ran it
    again. Only the probe's own end may close (or re-open) a half-open breaker."""
    gateway = breaker_gateway(tmp_path, shared_cache, probe_manifest(state), SHORT_COOLDOWN)
    try:
        client = gateway.client
        # The attacker's ordinary run: admitted now, clean, ending after the probe starts.
        ordinary: list[int] = []
        started = time.monotonic()
        runner = threading.Thread(target=lambda: ordinary.append(httpx.get(
            f"{gateway.url}/fail", params={"kind": "sleep", "s": f"{SHORT_COOLDOWN + 3:g}"},
            timeout=60.0).status_code))
        runner.start()
        time.sleep(0.5)
        violate(gateway.url)  # three clients' limit violations: the breaker opens
        time.sleep(0.1)  # admissions Redis granted ahead (`state.credit`) run out
        assert unavailable_reason(client.get("/fail", params={"kind": "none"})) == "breaker"
        time.sleep(SHORT_COOLDOWN + 0.5)
        # The probe: it fails again, at its timeout, long after the ordinary run ends.
        probe: list[int] = []
        prober = threading.Thread(target=lambda: probe.append(httpx.get(
            f"{gateway.url}/fail", params={"kind": "sleep", "s": "600"},
            timeout=60.0).status_code))
        prober.start()
        runner.join()
        assert ordinary == [200]
        assert time.monotonic() - started < SHORT_COOLDOWN + 0.5 + 3 + PROBE_TIMEOUT, \
            "too slow to test: the probe ended before the ordinary run"
        assert prober.is_alive()
        time.sleep(0.6)  # the Invoker's trust in a closed breaker (0.5 s) runs out
        # The probe is still out: the breaker is half-open and refuses everyone else
        # (but the ordinary run's address: in standing since, clientbreaker.py).
        with client_at(gateway.url, "127.0.0.40") as newcomer:
            assert unavailable_reason(newcomer.get("/fail", params={"kind": "none"})) == "breaker"
            prober.join()
            assert probe == [504]
            time.sleep(0.1)
            # The probe failed: open again for a cooldown.
            assert unavailable_reason(newcomer.get("/fail", params={"kind": "none"})) == "breaker"
    finally:
        gateway.stop()

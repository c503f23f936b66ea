"""A half-open breaker's probe that is refused before it runs (every guest thread busy,
the queue full) is given up as a failed probe: the function is refused for one more
cooldown, then probed again, never held refused until the probe timeout (5 minutes)
by a probe that never ran."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from .conftest import Gateway, gateway_env, module

COOLDOWN = 2.0


def _manifest() -> str:
    fail = module("fail")
    return f"""
[server]
workers = 1
threads = 1
max_queue = 0

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


def _reason(response: httpx.Response) -> str | None:
    if response.status_code != 503:
        return None
    reason: str | None = response.json().get("reason")
    return reason


def test_a_probe_refused_before_it_ran_does_not_hold_the_breaker(
        tmp_path: Path, shared_cache: Path) -> None:
    path = tmp_path / "stockade.toml"
    path.write_text(_manifest())
    env = {**gateway_env(shared_cache, tmp_path / "state"),
           "STOCKADE_BREAKER_COOLDOWN": f"{COOLDOWN:g}s"}
    gateway = Gateway(path, env, ())
    try:
        client = gateway.client
        for _ in range(3):  # three limit violations (the output cap): the breaker opens
            assert client.get("/fail", params={"kind": "flood"}).status_code == 502
        assert _reason(client.get("/fail", params={"kind": "none"})) == "breaker"
        time.sleep(COOLDOWN + 0.5)  # half-open: the next request is the probe
        # The only guest thread is held and nothing may queue: the probe (a sleeper, too
        # long to finish inline) is admitted by the breaker and refused by the queue.
        held: list[int] = []
        holder = threading.Thread(target=lambda: held.append(httpx.get(
            f"{gateway.url}/hold", params={"kind": "sleep", "s": "3"},
            timeout=30.0).status_code))
        holder.start()
        time.sleep(0.5)
        probe = client.get("/fail", params={"kind": "sleep", "s": "1"})
        assert _reason(probe) == "queue", probe.text
        holder.join()
        assert held == [200]
        # Given up as failed: refused for one more cooldown, then probed and closed.
        deadline = time.monotonic() + 4 * COOLDOWN + 5
        answer = None
        while time.monotonic() < deadline:
            answer = client.get("/fail", params={"kind": "none"})
            if answer.status_code == 200:
                break
            assert _reason(answer) == "breaker", answer.text
            time.sleep(0.25)
        assert answer is not None and answer.status_code == 200, "the breaker stayed open"
    finally:
        gateway.stop()

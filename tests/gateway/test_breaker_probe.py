"""Attack: a client fills the queue whenever a function's breaker half-opens, so the
probe the breaker grants is refused before it runs. Counted as a failed probe, that
held the breaker open for another cooldown each time, for as long as the client kept
at it; a probe that never ran proves nothing and is freed instead, so the very next
request probes (on the local state and on a shared Redis)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..state.conftest import RedisServer
from .conftest import Gateway, gateway_env, module

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


def _reason(response: httpx.Response) -> str | None:
    if response.status_code != 503:
        return None
    reason: str | None = response.json().get("reason")
    return reason


@pytest.fixture(params=["local", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The manifest's `[state]`: none (this server's) or a real redis-server's."""
    if request.param == "local":
        yield ""
        return
    server = RedisServer(tmp_path)
    try:
        yield f'[state]\nbackend = "{server.url}"\n'
    finally:
        server.stop()


def test_a_probe_refused_before_it_ran_is_freed_for_the_next_request(
        tmp_path: Path, shared_cache: Path, state: str) -> None:
    path = tmp_path / "stockade.toml"
    path.write_text(_manifest(state))
    env = {**gateway_env(shared_cache, tmp_path / "state"),
           "STOCKADE_BREAKER_COOLDOWN": f"{COOLDOWN:g}s"}
    gateway = Gateway(path, env, ())
    try:
        client = gateway.client
        for _ in range(3):  # three limit violations (the output cap): the breaker opens
            assert client.get("/fail", params={"kind": "flood"}).status_code == 502
        time.sleep(0.1)  # admissions Redis granted ahead (`state.credit`) run out
        assert _reason(client.get("/fail", params={"kind": "none"})) == "breaker"
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
        assert _reason(probe) == "queue", probe.text
        holder.join()
        assert held == [200]
        # Well within a cooldown of the refused probe: freed, the next request probes,
        # runs clean and closes the breaker (a failed probe would refuse it till then).
        answer = client.get("/fail", params={"kind": "none"})
        assert answer.status_code == 200, answer.text
        assert client.get("/fail", params={"kind": "none"}).status_code == 200
    finally:
        gateway.stop()

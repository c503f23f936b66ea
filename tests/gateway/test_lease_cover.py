"""Attack: a tenant's concurrency, shared through Redis, outgrown by a run that starts
late. Its slot is a lease in Redis, taken at admission; a pooled run that waits for a
busy pool worker (behind another tenant's run) starts seconds later and, with a lease of
`timeout + grace` from admission, runs on after the lease expired, while every replica
admits the tenant's next run beside it. The lease must cover the run however late it
starts: as long as the gateway may still hold the request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..state.conftest import RedisServer
from .conftest import Start, module

TIMEOUT = 6.0
HOG = 5.0  # seconds the other tenant's run holds the only pool worker
LATE = 5.0  # seconds the late run sleeps once it has a pool worker


def _manifest(url: str) -> str:
    return f"""
[server]
workers = 1
threads = 4
pool_workers = 1
telemetry = "off"
[state]
backend = "{url}"
[tenant.one]
concurrency = 1

[[function]]
name = "hog"
route = "/hog"
module = "{module("fail")}"
isolate = "process"
[function.limits]
timeout = "{TIMEOUT:g}s"
[[function]]
name = "late"
route = "/late"
module = "{module("fail")}"
tenant = "one"
isolate = "process"
[function.limits]
timeout = "{TIMEOUT:g}s"
[[function]]
name = "quick"
route = "/quick"
module = "{module("hello")}"
tenant = "one"
isolate = "none"
"""


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path)
    try:
        yield server.url
    finally:
        server.stop()


def test_a_run_that_starts_late_keeps_its_tenants_slot_in_redis(
        start_gateway: Start, redis_url: str) -> None:
    gateway = start_gateway(_manifest(redis_url))
    assert gateway.client.get("/quick").status_code == 200
    answers: dict[str, int] = {}

    def call(path: str, seconds: float) -> None:
        answers[path] = httpx.get(f"{gateway.url}{path}", params={
            "kind": "sleep", "s": f"{seconds:g}"}, timeout=60.0).status_code

    hog = threading.Thread(target=call, args=("/hog", HOG))
    hog.start()
    time.sleep(0.3)
    admitted = time.monotonic()
    late = threading.Thread(target=call, args=("/late", LATE))
    late.start()  # admitted now; it runs once the hog's run has ended
    # Past `timeout + 2 s` after the late run's admission, while it still runs.
    time.sleep(max(0.0, admitted + TIMEOUT + 2.0 + 0.7 - time.monotonic()))
    assert late.is_alive(), "the late run ended early: the attack did not take place"
    beside = gateway.client.get("/quick")
    still_running = late.is_alive()
    assert still_running, "the late run ended before the tenant's next request"
    assert beside.status_code == 429, (
        f"tenant one (concurrency 1) was admitted beside its running late run: "
        f"{beside.status_code}")
    assert beside.json()["limit"] == "concurrency"
    hog.join()
    late.join()
    assert answers["/hog"] == 200
    # Once the late run has ended, its slot comes back.
    deadline = time.monotonic() + 10.0
    while gateway.client.get("/quick").status_code != 200:
        assert time.monotonic() < deadline, "the late run's slot never came back"
        time.sleep(0.1)

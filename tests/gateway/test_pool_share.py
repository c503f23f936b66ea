"""One tenant cannot hold every process of a pool it shares with other tenants.

A tenant whose runs spin until just before their timeout, within its own concurrency
quota, held both processes of the default cordon's pool, and every other tenant's strict
function waited out its timeout for a 503 (found by review); so did two such tenants
together, and one with `pool_workers = 1` (the second review). A tenant takes a second
process only while one stays idle for each other tenant holding none; alone in its
cordon, it may use all of them.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from .conftest import Start, module
from .test_pool_backstop import _cpu_ticks, _pool_workers

SPIN = f"""
name = "{{name}}"
route = "/{{name}}"
module = "{module("spin")}"
tenant = "{{tenant}}"
isolate = "process"
[function.limits]
timeout = "3s"
fuel = "unlimited"
"""
MANIFEST = f"""
[server]
workers = 1
threads = 4
pool_workers = 2
telemetry = "off"
[tenant.evil]
concurrency = 4
[tenant.good]

[[function]]
{SPIN.format(name="nap", tenant="evil")}
[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "good"
isolate = "process"
[function.limits]
timeout = "2s"
"""


def _hold(url: str, path: str, statuses: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=30.0) as client:
        statuses.append(client.get(path).status_code)


def test_one_tenant_leaves_a_shared_pool_a_process(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    assert gateway.client.get("/hello").status_code == 200  # the pool is up
    statuses: list[int] = []
    naps = [threading.Thread(target=_hold, args=(gateway.url, "/nap", statuses))
            for _ in range(2)]
    for nap in naps:
        nap.start()
    time.sleep(0.3)  # both naps admitted: one runs, one waits for its tenant's share
    began = time.monotonic()
    answer = gateway.client.get("/hello")
    waited = time.monotonic() - began
    for nap in naps:
        nap.join()
    assert answer.status_code == 200, (answer.status_code, answer.text)
    assert waited < 2.0, waited  # not after its whole timeout
    # The tenant's second run waited for its own first to end (then ran, or gave up).
    assert set(statuses) <= {503, 504} and 504 in statuses, statuses


def test_a_tenant_alone_in_its_cordon_may_use_every_process(start_gateway: Start) -> None:
    alone = MANIFEST.split("[[function]]")[0] + "[[function]]" + \
        SPIN.format(name="nap", tenant="evil") + "[[function]]" + \
        SPIN.format(name="nap2", tenant="evil")
    gateway = start_gateway(alone)
    statuses: list[int] = []
    naps = [threading.Thread(target=_hold, args=(gateway.url, path, statuses))
            for path in ("/nap", "/nap2")]
    for nap in naps:
        nap.start()
    for nap in naps:
        nap.join()
    assert statuses == [504, 504], statuses  # both ran to their timeout, side by side


@pytest.mark.alone  # counts processes by their CPU share
def test_a_busy_tenant_uses_all_but_one_process_beside_quiet_ones(
        start_gateway: Start) -> None:
    # Keeping a process idle for every quiet tenant served a busy one a run at a time
    # beside idle processes (the second review): it gets all but one, one is kept.
    manifest = MANIFEST.replace("pool_workers = 2", "pool_workers = 3").replace(
        "[tenant.good]", "[tenant.good]\n[tenant.quiet]") + \
        "[[function]]\nname = \"idle\"\nroute = \"/idle\"\n" \
        f"module = \"{module('hello')}\"\ntenant = \"quiet\"\nisolate = \"process\"\n"
    gateway = start_gateway(manifest)
    assert gateway.client.get("/hello").status_code == 200  # the pool is up
    workers = _pool_workers(gateway.process.pid)
    assert len(workers) == 3, workers
    statuses: list[int] = []
    naps = [threading.Thread(target=_hold, args=(gateway.url, "/nap", statuses))
            for _ in range(4)]
    for nap in naps:
        nap.start()
    time.sleep(0.5)  # the naps spin in the processes they were given
    before = {pid: _cpu_ticks(pid) for pid in workers}
    time.sleep(0.5)
    spinning = [pid for pid in workers if _cpu_ticks(pid) > before[pid] + 10]
    answer = gateway.client.get("/hello")
    for nap in naps:
        nap.join()
    assert len(spinning) == 2, spinning
    assert answer.status_code == 200, (answer.status_code, answer.text)

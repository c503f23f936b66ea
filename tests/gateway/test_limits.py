"""Quotas: the limiter on a controlled clock, then tenant and function quotas over HTTP."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from stockade.state import GateSpec, LocalState, Quota, QuotaExceeded
from stockade.state.quota import Limiter, QuotaStore

from .conftest import Start, module


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(limiter: Limiter) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as error:
        limiter.admit()
    return error.value


def test_concurrency_rate_and_cpu() -> None:
    clock = Clock()
    limiter = Limiter("tenant t", Quota(concurrency=2, rate=2, burst=2, cpu_per_minute=6.0),
                      clock)
    limiter.admit()
    limiter.admit()
    assert refused(limiter).limit == "concurrency"
    limiter.release(0.0)
    limiter.release(0.0)
    error = refused(limiter)
    assert (error.limit, error.retry_after) == ("rate", 0.5)
    clock.now += 1.0
    limiter.admit()
    limiter.release(7.0)  # 1 s over the 6 s budget; it refills at 0.1 s per second
    error = refused(limiter)
    assert error.limit == "cpu" and error.retry_after == pytest.approx(10.0)
    clock.now += 10.0
    limiter.admit()


def test_update_keeps_in_flight_counts() -> None:
    limiter = Limiter("function f", Quota(concurrency=1), Clock())
    limiter.admit()
    limiter.update(Quota(concurrency=2))
    limiter.admit()
    assert refused(limiter).limit == "concurrency"
    assert Limiter("x", Quota()).unlimited


def test_unlimited_gate_counts_nothing_until_a_reload_sets_a_quota() -> None:
    state = LocalState()
    spec = GateSpec("f", "t", Quota(), Quota())
    gate = state.gate(spec)
    free = gate.admit_now()
    assert free is not None and not free.degraded and not free.probe
    free.release(1.0)
    state.update({"tenant:t": Quota(concurrency=1)})
    lease = gate.admit_now()
    assert lease is not None
    with pytest.raises(QuotaExceeded):
        gate.admit_now()
    lease.release(0.0)
    gate.admit_now()  # the slot came back
    assert LocalState(degraded=True).gate(spec).admit().degraded


@pytest.mark.parametrize("quotas", [
    # (function, tenant) before, between and after two reloads, with requests in flight
    ((Quota(concurrency=5), Quota()), (Quota(), Quota()), (Quota(concurrency=1), Quota())),
    ((Quota(concurrency=5), Quota()), (Quota(concurrency=5), Quota(concurrency=1)),
     (Quota(concurrency=5), Quota(concurrency=1))),
    ((Quota(), Quota()), (Quota(concurrency=1), Quota()), (Quota(concurrency=1), Quota())),
])
def test_a_reload_under_load_leaves_the_counts_right(
        quotas: tuple[tuple[Quota, Quota], ...]) -> None:
    """Slots are given back as they were taken: a quota lifted while requests ran did not
    give theirs back (429 for the worker's life once set again), and one set while they
    ran freed slots they never took (two runs under concurrency 1)."""
    state = LocalState()
    gate = state.gate(GateSpec("f", "t", *quotas[0]))

    def reload(function: Quota, tenant: Quota) -> None:
        state.update({"function:f": function, "tenant:t": tenant})

    early = [gate.admit() for _ in range(3)]
    reload(*quotas[1])
    for lease in early:
        lease.release(0.0)
    reload(*quotas[2])
    first = gate.admit()  # nothing is in flight: one slot is free
    with pytest.raises(QuotaExceeded):
        gate.admit()  # and only one
    first.release(0.0)
    gate.admit().release(0.0)


def test_a_quota_set_under_load_counts_only_new_requests() -> None:
    state = LocalState()
    gate = state.gate(GateSpec("f", "t", Quota(concurrency=5), Quota()))
    early = [gate.admit() for _ in range(2)]
    state.update({"tenant:t": Quota(concurrency=1)})
    running = gate.admit()
    for lease in early:  # they took no tenant slot: they give none back
        lease.release(0.0)
    with pytest.raises(QuotaExceeded):
        gate.admit()
    running.release(0.0)
    gate.admit().release(0.0)


MANIFEST = f"""
[server]
telemetry = "off"
[tenant.busy]
concurrency = 1
[tenant.slow]
rate = 0.1
[tenant.cpu]
cpu_per_minute = "50ms"

[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"
tenant = "busy"
[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "busy"
[[function]]
name = "rated"
route = "/rated"
module = "{module("hello")}"
tenant = "slow"
[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
tenant = "cpu"
[function.limits]
timeout = "200ms"
fuel = "unlimited"
[[function]]
name = "solo"
route = "/solo"
module = "{module("fail")}"
max_concurrency = 1
"""


def in_background(client: httpx.Client, path: str) -> tuple[threading.Thread, list[int]]:
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(client.get(path).status_code))
    thread.start()
    return thread, statuses


def wait_in_flight(client: httpx.Client, function: str) -> None:
    series = f'stockade_gateway_inflight{{function="{function}"'
    for _ in range(400):
        if any(line.startswith(series) and line.endswith(" 1")
               for line in client.get("/metrics").text.splitlines()):
            return
        threading.Event().wait(0.025)
    pytest.fail(f"{function} never became in flight")


def test_tenant_and_function_quotas_answer_429(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    client = gateway.client
    for slow_path, other, limit in (("/sleep?kind=sleep&s=2", "/hello", "tenant busy"),
                                    ("/solo?kind=sleep&s=2", "/solo", "function solo")):
        thread, statuses = in_background(client, slow_path)
        wait_in_flight(client, slow_path.split("?")[0][1:])
        response = client.get(other)
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert response.json()["limit"] == "concurrency" and limit in response.json()["detail"]
        thread.join()
        assert statuses == [200]
    assert client.get("/rated").status_code == 200
    rated = client.get("/rated")
    assert rated.status_code == 429 and rated.json()["limit"] == "rate"
    assert int(rated.headers["retry-after"]) >= 5
    assert client.get("/spin").status_code == 504  # spends ~200 ms of a 50 ms budget
    spent = client.get("/spin")
    assert spent.status_code == 429 and spent.json()["limit"] == "cpu"
    assert 'reason="cpu"' in client.get("/metrics").text


def test_workers_share_one_whole_quota(tmp_path: Path) -> None:
    # Two workers of one server: each enforces the whole quota against the shared state.
    first, second = QuotaStore(tmp_path, 0), QuotaStore(tmp_path, 1)
    quota = Quota(concurrency=2, rate=1, burst=3)
    one = Limiter("tenant t", quota, cell=first.cell("tenant:t"))
    two = Limiter("tenant t", quota, cell=second.cell("tenant:t"))
    one.admit()
    two.admit()
    assert refused(one).limit == "concurrency"
    assert refused(two).limit == "concurrency"
    two.release(0.25)
    one.admit()  # the third token of the burst of 3, whoever takes it
    one.release(0.5)
    one.release(0.0)
    assert refused(two).limit == "rate"
    assert one.active == two.active == 0 and one.cpu_charged == two.cpu_charged == 0.75
    # A worker that dies holding slots gives them back when its replacement starts.
    two._cell.add_active(1)  # what a worker killed mid-request leaves behind
    two._cell.add_active(1)
    assert one.active == 2
    Limiter("tenant t", quota, cell=QuotaStore(tmp_path, 1).cell("tenant:t"))
    assert one.active == 0


CONCURRENCY = f"""
[server]
workers = 4
reuse_port = true         # each worker accepts its own share of the connections
telemetry = "off"
[tenant.pair]
concurrency = 2
[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"
tenant = "pair"
isolate = "none"
"""


def test_concurrency_two_with_four_workers_admits_two(start_gateway: Start) -> None:
    gateway = start_gateway(CONCURRENCY)
    statuses: list[int] = []
    limits: list[str] = []

    def call() -> None:
        # A client (and a connection) of its own: requests spread over the workers.
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            response = client.get("/sleep", params={"kind": "sleep", "s": "3"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            limits.append(response.json()["limit"])

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # All eight overlap (each sleeps 3 s): at most two ran, whichever worker took them.
    assert 1 <= statuses.count(200) <= 2, statuses
    assert statuses.count(429) == 8 - statuses.count(200)
    assert set(limits) == {"concurrency"}


def metric(text: str, name: str, function: str) -> float:
    """The value of series `name` for `function` in a /metrics page."""
    match = re.search(rf'^{name}\{{function="{function}"[^}}]*\}} (\S+)$', text, re.M)
    assert match, f"no {name} for {function}"
    return float(match.group(1))


CPU = f"""
[server]
workers = 2
telemetry = "off"
[tenant.cpu]
cpu_per_minute = "1m"
[[function]]
name = "inline"
route = "/inline"
module = "{module("spin")}"
tenant = "cpu"
isolate = "none"          # finishes inline on the fast path
[[function]]
name = "pooled"
route = "/pooled"
module = "{module("spin")}"
tenant = "cpu"
isolate = "process"
"""


def test_cpu_is_charged_once(start_gateway: Start) -> None:
    gateway = start_gateway(CPU)
    for _ in range(20):
        for name in ("inline", "pooled"):
            response = gateway.client.get(f"/{name}", params={"n": "1000"})
            assert response.status_code == 200, response.text
    text = gateway.client.get("/metrics").text
    for name in ("inline", "pooled"):
        # What the quota was charged, against the guests' own CPU time: counters, so no
        # refill blurs the comparison.
        charged = metric(text, "stockade_gateway_quota_cpu_seconds_total", name)
        used = metric(text, "stockade_gateway_guest_cpu_seconds_total", name)
        if name == "inline" and re.search(
                r'^stockade_gateway_offloaded_total\{function="inline"', text, re.M):
            # An inline attempt that outgrew its CPU budget (a loaded machine) is charged
            # too, and its run again on a guest thread: charged once each, never less.
            assert used > 0 and charged >= used, (name, charged, used)
            continue
        assert used > 0 and round(charged / used, 2) == 1.00, (name, charged, used)

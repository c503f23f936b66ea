"""The simulated cluster (`deploy/simulate/cluster.py`): three `stockade serve` replicas
in their own network namespaces, Redis, HAProxy in front, started and stopped by the
tests. Limits must hold for the cluster as a whole, a lost node must cost only the
requests already sent to it, and Redis going away must give the configured behaviour.

The tests marked `needs_shared_state` need `[state] backend = "redis://..."`; they are
skipped, saying so, in a build without the shared-state backend."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..gateway.conftest import module
from .cluster import (
    Reply,
    balancer_log,
    hammer,
    needs_shared_state,
    running_cluster,
    script,
    steady_rate,
)

pytestmark = pytest.mark.slow

RATE = 20  # requests per second for the rated tenant (burst: one second's worth)
SLOTS = 2  # concurrency of the narrow tenant
SLEEP = 1  # seconds a slow request holds its slot


def manifest() -> str:
    """Every cluster's manifest: an open hello, a rated hello, a slow function in a
    tenant of SLOTS, and a spinning function whose breaker opens after 3 timeouts."""
    return f"""
[server]
threads = 16
drain_timeout = "10s"
access_log = "off"
telemetry = "off"
breaker_clients = false  # the tests' one client stands for a balancer hiding clients

[tenant.open]
[tenant.rated]
rate = {RATE}
[tenant.narrow]
concurrency = {SLOTS}
[tenant.tripping]

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "open"
isolate = "none"

[[function]]
name = "rated"
route = "/rated"
module = "{module("hello")}"
tenant = "rated"
isolate = "none"

[[function]]
name = "slow"
route = "/slow"
module = "{module("fail")}"
tenant = "narrow"
isolate = "none"
limits = {{ timeout = "8s" }}  # its leases last 2 x (8 + 1) s: the SIGKILL test waits them out

[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
tenant = "tripping"
isolate = "none"
limits = {{ timeout = "100ms" }}
"""


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory,
                  shared_config: Path) -> Iterator[Any]:
    """Three replicas, each with its own state (no Redis), HAProxy in front."""
    with running_cluster(tmp_path_factory.mktemp("local"), manifest()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory,
                  shared_config: Path) -> Iterator[Any]:
    """Three replicas sharing state in one Redis (with a password), HAProxy in front."""
    with running_cluster(tmp_path_factory.mktemp("redis"), manifest(), state="redis",
                         redis_password="cluster-test-secret") as cluster:
        yield cluster


def served_by(cluster: Any, path: str) -> Counter[str]:
    """How many requests for `path` HAProxy sent to each replica."""
    return Counter(e["server"] for e in balancer_log(cluster) if e["path"] == path)


def parallel(url: str, count: int, path: str) -> list[Reply]:
    """`count` requests sent at once, each on its own connection."""
    replies: list[Reply] = []
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            barrier.wait()
            sent = time.monotonic()
            try:
                status = http.get(path).status_code
            except httpx.HTTPError:
                status = 0
            replies.append(Reply(sent, time.monotonic(), status, index))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return replies


# -- the topology --------------------------------------------------------------------


def test_replicas_are_separate_nodes_behind_one_balancer(local_cluster: Any) -> None:
    """Each replica listens on its own address, in its own network namespace (where the
    machine allows), answers /readyz, and HAProxy spreads requests over all of them."""
    addresses = {node.address for node in local_cluster.nodes}
    assert len(addresses) == len(local_cluster.nodes) == 3
    for node in local_cluster.nodes:
        assert httpx.get(f"{node.url}/readyz", timeout=10).status_code == 200
        if local_cluster.mode == "netns":
            listening = subprocess.run(["ip", "netns", "exec", node.netns, "ss", "-ltnH"],
                                       capture_output=True, text=True, check=True).stdout
            assert f"{node.address}:{node.port}" in listening
            # No other replica listens in this node's namespace.
            assert not any(f"{n.address}:" in listening for n in local_cluster.nodes
                           if n is not node)
        else:
            print(f"loopback nodes: {local_cluster.fallback_reason}")
    with httpx.Client(base_url=local_cluster.url, timeout=30) as http:
        for _ in range(30):
            assert http.get("/hello").status_code == 200
    counts = served_by(local_cluster, "/hello")
    assert set(counts) == {"node1", "node2", "node3"}, counts
    assert min(counts.values()) >= 5, counts


def test_local_state_is_per_replica(local_cluster: Any) -> None:
    """The baseline that makes the shared-state test mean something: with local state,
    a load that would give each replica RATE gets about three times RATE through."""
    replies = hammer(local_cluster.url, 6.0, clients=8, path="/rated")
    offered = len(replies) / 6.0
    assert offered > 4 * RATE, f"the load generator reached only {offered:.0f} req/s"
    rate = steady_rate(replies, skip=2.0)
    assert rate > 2 * RATE, f"{rate:.1f} req/s accepted: not limited per replica?"


def test_sigterm_drains_a_replica_without_losing_a_request(local_cluster: Any) -> None:
    """SIGTERM: the replica's /readyz goes 503, HAProxy stops sending to it, in-flight
    requests finish, connections it refuses are retried elsewhere: no client error."""
    results: list[list[Reply]] = []
    loader = threading.Thread(
        target=lambda: results.append(hammer(local_cluster.url, 5.0, 6, "/hello")))
    loader.start()
    time.sleep(1.5)
    local_cluster.kill("node3", signal.SIGTERM)
    loader.join(90)
    replies = results[0]
    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} requests failed: " \
                       f"{Counter(r.status for r in failed)}"
    assert len(replies) > 50


def test_sigkill_loses_only_requests_already_sent_to_the_node(local_cluster: Any) -> None:
    """SIGKILL a whole node under load: the others carry on; every failed request is
    one HAProxy had already sent to the dead node, at most one per client."""
    live = [n.name for n in local_cluster.nodes if n.name in local_cluster.pids]
    victim = live[0]
    results: list[list[Reply]] = []
    clients = 6
    loader = threading.Thread(
        target=lambda: results.append(hammer(local_cluster.url, 5.0, clients, "/hello")))
    before = len(balancer_log(local_cluster))
    loader.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    local_cluster.kill(victim, signal.SIGKILL)
    loader.join(90)
    replies = results[0]
    failed = [r for r in replies if r.status != 200]
    assert len(failed) <= clients, Counter(r.status for r in failed)
    # HAProxy writes a request's line when the request ends: give the last ones time.
    give_up = time.monotonic() + 5.0
    while True:
        log = balancer_log(local_cluster)[before:]
        failed_in_log = [e for e in log if e["status"] != "200"]
        if len(failed_in_log) >= len(failed) or time.monotonic() > give_up:
            break
        time.sleep(0.1)
    assert len(failed_in_log) == len(failed), (failed_in_log, [r.status for r in failed])
    for entry in failed_in_log:
        assert entry["server"] == victim, entry  # sent there before it died
    after = [r for r in replies if r.sent > killed_at + 1.0]
    assert after and all(r.status == 200 for r in after)
    assert served_by(local_cluster, "/hello")  # the survivors served them


def test_down_stops_every_process_and_removes_the_network(tmp_path: Path) -> None:
    """`down` ends every recorded PID and leaves no namespace, interface or manifest."""
    with running_cluster(tmp_path / "run", manifest(), replicas=2) as cluster:
        pids = dict(cluster.pids)
        names = [n.netns for n in cluster.nodes if n.netns] + \
            [n.veth for n in cluster.nodes if n.veth] + [cluster.bridge] * bool(cluster.bridge)
        assert len(pids) == 3  # two replicas and HAProxy
    for name, pid in pids.items():
        assert not script._alive(pid), f"{name} ({pid}) still runs"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for name in names:
        assert name not in netns and f" {name}:" not in links and f" {name}@" not in links
    assert not list((tmp_path / "run" / "pids").glob("*.pid"))


# -- shared state (Redis) ----------------------------------------------------------------


@needs_shared_state
def test_rate_holds_across_the_cluster(redis_cluster: Any) -> None:
    """A tenant of RATE req/s gets RATE (+-5 %) through three replicas, under a load
    that would give each replica RATE."""
    replies = hammer(redis_cluster.url, 8.0, clients=8, path="/rated")
    offered = len(replies) / 8.0
    assert offered > 4 * RATE, f"the load generator reached only {offered:.0f} req/s"
    rate = steady_rate(replies, skip=2.0)
    assert abs(rate - RATE) <= 0.05 * RATE, f"{rate:.2f} req/s accepted, limit {RATE}"
    assert len(served_by(redis_cluster, "/rated")) == 3


@needs_shared_state
def test_concurrency_holds_across_the_cluster(redis_cluster: Any) -> None:
    """SLOTS slow requests at once for the whole cluster: the rest are refused."""
    replies = parallel(redis_cluster.url, 4 * SLOTS * 3 // 2, f"/slow?kind=sleep&s={SLEEP}")
    statuses = Counter(r.status for r in replies)
    assert statuses[200] == SLOTS, statuses
    assert statuses[429] == len(replies) - SLOTS, statuses


@needs_shared_state
def test_breaker_opened_through_one_replica_refuses_on_all(redis_cluster: Any) -> None:
    """Three limit violations through node1 open the function's breaker; node2 and
    node3 refuse it within 100 ms."""
    first, *others = redis_cluster.nodes
    with httpx.Client(timeout=30) as http:
        statuses = [http.get(f"{first.url}/spin").status_code for _ in range(3)]
        opened = time.monotonic()
        # a timeout (504), or the fuel budget first (502): both are limit violations
        assert set(statuses) <= {502, 504}, statuses
        assert http.get(f"{first.url}/spin").status_code == 503
        late: list[tuple[float, int]] = []
        while time.monotonic() < opened + 0.5:
            for node in others:
                sent = time.monotonic() - opened
                late.append((sent, http.get(f"{node.url}/spin").status_code))
    after = [status for sent, status in late if sent >= 0.1]
    assert after and set(after) == {503}, late


@needs_shared_state
def test_sigkill_returns_the_dead_nodes_leases(redis_cluster: Any) -> None:
    """A node killed while holding the tenant's concurrency slots: once its leases
    expire the whole cluster has SLOTS slots again."""
    victim = redis_cluster.nodes[0]
    cut: list[str] = []

    def hold() -> None:
        try:
            httpx.get(f"{victim.url}/slow?kind=sleep&s=6", timeout=30)
        except httpx.HTTPError as exc:  # the node dies under it: that is the point
            cut.append(type(exc).__name__)

    holders = [threading.Thread(target=hold) for _ in range(SLOTS)]
    for holder in holders:
        holder.start()
    time.sleep(1.0)
    assert httpx.get(f"{redis_cluster.url}/slow?kind=sleep&s=0", timeout=30).status_code \
        == 429
    redis_cluster.kill(victim.name, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = parallel(redis_cluster.url, SLOTS, "/slow?kind=sleep&s=0")
        if all(r.status == 200 for r in replies):
            break
        time.sleep(1.0)
    else:
        pytest.fail("the dead node's slots never returned")
    for holder in holders:
        holder.join(30)
    assert len(cut) == SLOTS, "the holders' requests were not cut by the kill"


def fallbacks(node: Any) -> float:
    """Requests the replica decided alone because shared state was unavailable."""
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("stockade_gateway_state_fallbacks_total"))


def wait_until_shared(node: Any, timeout: float = 30.0) -> None:
    """Until a request through `node` is admitted by Redis again (200, not counted as
    a fallback)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = fallbacks(node)
        if httpx.get(f"{node.url}/hello", timeout=10).status_code == 200 \
                and fallbacks(node) == before:
            return
        time.sleep(0.2)
    pytest.fail(f"{node.name} did not go back to shared state within {timeout:.0f} s")


@needs_shared_state
@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_redis_going_away_and_coming_back(tmp_path: Path, policy: str) -> None:
    """Redis stopped: fail_closed answers 503 and fail_open serves on local limits
    (counted as fallbacks), within one state timeout (no hang); Redis back: every
    replica returns to the shared limits."""
    with running_cluster(tmp_path / "run", manifest(), state="redis",
                         on_unavailable=policy) as cluster:
        with httpx.Client(base_url=cluster.url, timeout=30) as http:
            assert http.get("/hello").status_code == 200
            before = sum(fallbacks(node) for node in cluster.nodes)
            cluster.kill("redis", signal.SIGKILL)
            expected = 503 if policy == "fail_closed" else 200
            statuses = []
            for _ in range(6):
                started = time.monotonic()
                statuses.append(http.get("/hello").status_code)
                elapsed = time.monotonic() - started
                # one state timeout (250 ms by default) plus generous slack: never a hang
                assert elapsed < 0.25 * 1.1 + 1.0, elapsed
            assert statuses[-3:] == [expected] * 3, statuses
            if policy == "fail_open":
                assert sum(fallbacks(node) for node in cluster.nodes) > before
            cluster.start_redis()
            for node in cluster.nodes:
                wait_until_shared(node)
        replies = hammer(cluster.url, 6.0, clients=8, path="/rated")
        rate = steady_rate(replies, skip=2.0)
        assert abs(rate - RATE) <= 0.05 * RATE, f"{rate:.2f} req/s after recovery"

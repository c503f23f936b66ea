"""`stockade serve` as one of many: three real servers sharing one real redis-server.

Attacks first: a tenant spreading its load over replicas, a breaker tripped through one
replica, a replica killed holding slots, a stopped store, a spoiled key; then what a
load balancer relies on (drain, replica id, metrics that sum)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..state.conftest import RedisServer
from .conftest import Gateway, client_at, gateway_env, module, violate
from .test_breakers import pool_manifest, probe_while_the_pool_is_busy

BREAKER_ENV = {"STOCKADE_BREAKER_THRESHOLD": "3", "STOCKADE_BREAKER_COOLDOWN": "30s"}


def manifest(url: str, policy: str = "fail_closed", server: str = "") -> str:
    return f"""
[server]
telemetry = "off"
{server}
[state]
backend = "{url}"
on_unavailable = "{policy}"
timeout = "500ms"
[tenant.rated]
rate = 10
burst = 10
[tenant.pair]
concurrency = 2
[tenant.spoiled]
rate = 100
[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "rated"
isolate = "none"
[[function]]
name = "free"
route = "/free"
module = "{module("hello")}"
isolate = "none"
[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"
tenant = "pair"
isolate = "none"
[function.limits]
timeout = "2s"
[[function]]
name = "quick"
route = "/quick"
module = "{module("hello")}"
tenant = "pair"
isolate = "none"
[[function]]
name = "victim"
route = "/victim"
module = "{module("hello")}"
tenant = "spoiled"
isolate = "none"
[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
isolate = "none"
[function.limits]
timeout = "100ms"
fuel = "unlimited"
"""


def start_all(path: Path, env: dict[str, str], count: int) -> list[Gateway]:
    """Start `count` servers of `path` at once (each takes seconds to load)."""
    gateways: list[Gateway | BaseException] = [RuntimeError("not started")] * count

    def start(index: int) -> None:
        try:
            gateways[index] = Gateway(path, env, ())
        except BaseException as exc:  # noqa: BLE001 - reported below
            gateways[index] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [g for g in gateways if isinstance(g, Gateway)]
    if len(started) != count:
        for gateway in started:
            gateway.stop()
        pytest.fail(f"servers did not start: {gateways}")
    return started


class Cluster:
    """Three servers of one manifest sharing `redis`."""

    def __init__(self, redis: RedisServer, gateways: list[Gateway]) -> None:
        self.redis = redis
        self.gateways = gateways


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path,
            shared_config: Path) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(base)
    path = base / "stockade.toml"
    path.write_text(manifest(redis.url))
    env = {**gateway_env(shared_cache, base / "state"), **BREAKER_ENV}
    gateways = start_all(path, env, 3)
    try:
        yield Cluster(redis, gateways)
    finally:
        for gateway in gateways:
            gateway.stop()
        redis.stop()


def test_a_tenant_spread_over_three_replicas_gets_its_rate_once(cluster: Cluster) -> None:
    for gateway in cluster.gateways:  # warm: a cold start is time no request asks
        assert gateway.client.get("/free").status_code == 200
    statuses: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 3.0

    def hammer(gateway: Gateway) -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            while time.monotonic() < stop:
                status = client.get("/hello").status_code
                with lock:
                    statuses.append((time.monotonic(), status))

    threads = [threading.Thread(target=hammer, args=(g,)) for g in cluster.gateways]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    admitted = sum(1 for _, status in statuses if status == 200)
    assert {status for _, status in statuses} <= {200, 429}
    # Rate 10 with a burst of 10: about 10 + 10 * elapsed over the cluster, where three
    # islands would each have given that (3x). GCRA admits at most one more.
    assert admitted <= 10 + 10 * elapsed + 1, (admitted, elapsed)
    assert admitted >= 10 + 10 * (elapsed - 1.0), (admitted, elapsed)
    assert len(statuses) > 3 * admitted  # the load would have given each replica R


def test_a_concurrency_limit_holds_across_replicas(cluster: Cluster) -> None:
    answers: list[tuple[float, int]] = []

    def call(gateway: Gateway) -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            status = client.get("/sleep", params={"kind": "sleep", "s": "1.5"}).status_code
            answers.append((time.monotonic(), status))

    threads = [threading.Thread(target=call, args=(g,)) for g in cluster.gateways * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Six 1.5 s requests, two per replica, against a tenant limit of 2: a third can run
    # only once one of two has ended (on a loaded machine a request may come late).
    ends = sorted(at for at, status in answers if status == 200)
    assert {status for _, status in answers} <= {200, 429} and ends, answers
    pairs = zip(ends, ends[2:], strict=False)
    assert all(later - first >= 1.2 for first, later in pairs), answers


def test_a_breaker_tripped_through_one_replica_refuses_on_every_replica(
        cluster: Cluster) -> None:
    first, *others = cluster.gateways
    violate(first.url, "/spin", {}, status=504)  # three clients' timeouts, one replica
    tripped = time.monotonic()
    for gateway in others:
        # A connection of its own: the replica may close the shared client's idle
        # keep-alive connection (unused while the violations ran) just as it is reused.
        response = httpx.get(f"{gateway.url}/spin", timeout=30.0)
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "breaker"
        assert "circuit breaker opened after 3 violations" in response.json()["detail"]
    assert time.monotonic() - tripped < 1.0  # the first request on each already refused
    assert others[0].client.get("/free").status_code == 200


def test_a_spoiled_key_refuses_its_tenant_and_the_gateway_serves_on(cluster: Cluster) -> None:
    from stockade.state.keys import TenantKeys

    client = cluster.redis.client()
    client.set(TenantKeys.of("spoiled", "victim", "-").tenant_quota, "not a hash")
    gateway = cluster.gateways[0]
    response = gateway.client.get("/victim")
    assert response.status_code == 503 and response.json()["reason"] == "state"
    assert gateway.client.get("/free").status_code == 200
    client.delete(TenantKeys.of("spoiled", "victim", "-").tenant_quota)
    assert gateway.client.get("/victim").status_code == 200
    assert "a script failed" in gateway.log()


def test_replicas_name_themselves_and_their_counters_sum(cluster: Cluster) -> None:
    ids = set()
    for gateway in cluster.gateways:
        text = gateway.client.get("/metrics").text
        info = [line for line in text.splitlines()
                if line.startswith("stockade_gateway_replica_info{")]
        assert len(info) == 1 and info[0].endswith(" 1")
        ids.add(info[0])
    assert len(ids) == 3


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` for one test."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_killed_replicas_slots_return_after_their_lease(
        tmp_path: Path, shared_cache: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "stockade.toml"
    path.write_text(manifest(redis_server.url))
    doomed, survivor = start_all(path, gateway_env(shared_cache, tmp_path / "state"), 2)
    try:
        def sleep() -> None:
            with pytest.raises(httpx.HTTPError):  # the replica dies under it
                doomed.client.get("/sleep", params={"kind": "sleep", "s": "1.9"})

        threads = [threading.Thread(target=sleep) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        series = 'stockade_gateway_inflight{function="sleep",tenant="pair"} 2'
        while series not in doomed.client.get("/metrics").text:
            assert time.monotonic() < deadline, "the two sleeps never held the tenant's slots"
            time.sleep(0.02)
        assert survivor.client.get("/quick").status_code == 429
        for pid in children(doomed.process.pid):  # a crash: nobody releases anything
            os.kill(pid, signal.SIGKILL)
        doomed.process.kill()
        killed = time.monotonic()
        for thread in threads:
            thread.join()
        assert survivor.client.get("/quick").status_code == 429  # still leased
        while survivor.client.get("/quick").status_code != 200:
            # The lease is as long as the gateway may hold a request of the function
            # (`invoke.longest_hold`: 2 x (2 s timeout + 1 s)) plus a grace of 2 s: 8 s.
            assert time.monotonic() - killed < 14, "the killed replica's leases never expired"
            time.sleep(0.1)
    finally:
        doomed.stop()
        survivor.stop()


def test_a_stopped_store_gives_each_policy_within_a_timeout_then_recovers(
        tmp_path: Path, shared_cache: Path, redis_server: RedisServer) -> None:
    env = gateway_env(shared_cache, tmp_path / "state")
    closed_path, open_path = tmp_path / "closed.toml", tmp_path / "open.toml"
    closed_path.write_text(manifest(redis_server.url, "fail_closed"))
    open_path.write_text(manifest(redis_server.url, "fail_open"))
    closed, opened = Gateway(closed_path, env, ()), Gateway(open_path, env, ())
    try:
        assert closed.client.get("/free").status_code == 200
        redis_server.stop()
        start = time.monotonic()
        # A client never served: one in standing asks no breaker, and a function without
        # quotas nothing else of the store (standing.py).
        with client_at(closed.url, "127.0.0.40") as newcomer:
            response = newcomer.get("/free")
        assert time.monotonic() - start < 0.5 + 1.0  # one timeout, and slack
        assert response.status_code == 503 and response.json()["reason"] == "state"
        assert "fail_closed" in response.json()["detail"]
        assert int(response.headers["retry-after"]) >= 1
        start = time.monotonic()
        assert opened.client.get("/free").status_code == 200
        assert time.monotonic() - start < 0.5 + 1.0
        metrics = opened.client.get("/metrics").text
        assert 'stockade_gateway_state_fallbacks_total{function="free"' in metrics
        assert 'stockade_gateway_state_unavailable_total{policy="fail_open"}' in metrics
        opened.wait_for_log("shared state .* is unavailable .*fail_open")
        redis_server.start()
        deadline = time.monotonic() + 10
        while closed.client.get("/free").status_code != 200:
            assert time.monotonic() < deadline, "never reconnected"
            time.sleep(0.1)
        for newcomer in ("127.0.0.41", "127.0.0.42"):  # each asks the store (above)
            with client_at(opened.url, newcomer) as client:
                client.get("/free")
            time.sleep(1.1)
        opened.wait_for_log("answers again")
    finally:
        closed.stop()
        opened.stop()


def test_a_client_that_opened_a_shared_breaker_cannot_take_its_probes(
        tmp_path: Path, shared_cache: Path, redis_server: RedisServer) -> None:
    """Attack, on replicas sharing Redis: three addresses open a function's breaker
    through one replica; when it half-opens, one of them asks for the probe through
    every replica with its failing input. It is refused (the probe granted with its
    lease is freed at once), and another client's clean request closes the breaker."""
    path = tmp_path / "stockade.toml"
    path.write_text(manifest(redis_server.url) + f"""
[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
isolate = "none"
max_response = "64KiB"
""")
    env = {**gateway_env(shared_cache, tmp_path / "state"), **BREAKER_ENV,
           "STOCKADE_BREAKER_COOLDOWN": "1s"}
    gateways = start_all(path, env, 2)
    try:
        violate(gateways[0].url)
        deadline = time.monotonic() + 30
        refusals = 0
        while refusals < 6:
            for gateway in gateways:
                with client_at(gateway.url, "127.0.0.12") as attacker:
                    response = attacker.get("/fail", params={"kind": "flood"})
                assert response.status_code == 503, response.text
                refusals += "half-open" in response.json()["detail"]
            assert time.monotonic() < deadline, "the breaker never half-opened"
            time.sleep(0.05)
        # A request refused after its lease granted the probe (its CGI variables cannot
        # be built) frees it: it held it for `probe_timeout`, 503 for everyone.
        with client_at(gateways[1].url, "127.0.0.40") as other:
            assert other.get("/fail/%00", params={"kind": "none"}).status_code == 400
        served = gateways[1].client.get("/fail", params={"kind": "none"})
        assert served.status_code == 200, served.text
        assert gateways[0].client.get("/fail", params={"kind": "none"}).status_code == 200
    finally:
        for gateway in gateways:
            gateway.stop()


@pytest.mark.parametrize("inline", ["true", "false"])
def test_a_shared_probe_refused_by_a_busy_pool_is_freed(
        tmp_path: Path, shared_cache: Path, redis_server: RedisServer, inline: str) -> None:
    """Attack: hold a cordon's pool workers when a shared breaker half-opens. Without
    inline runs, the probe granted with the lease was forgotten when the guest thread
    asked the breaker again, so the refused run never freed it: 503 for everyone on
    every replica for `probe_timeout`; with them, it was counted as a failed probe."""
    path = tmp_path / "stockade.toml"
    path.write_text(pool_manifest(f'inline = {inline}\ntelemetry = "off"') + f"""
[state]
backend = "{redis_server.url}"
""")
    env = {**gateway_env(shared_cache, tmp_path / "state"), **BREAKER_ENV,
           "STOCKADE_BREAKER_COOLDOWN": "2s"}
    gateway = Gateway(path, env, ())
    try:
        probe_while_the_pool_is_busy(gateway.url, gateway.client)
    finally:
        gateway.stop()


def test_sigterm_turns_readiness_off_first_and_serves_through_the_grace(
        tmp_path: Path, shared_cache: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "stockade.toml"
    path.write_text(manifest(redis_server.url, server='drain_grace = "1.5s"'))
    gateway = Gateway(path, gateway_env(shared_cache, tmp_path / "state"), ())
    try:
        assert gateway.client.get("/readyz").status_code == 200
        gateway.signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while gateway.client.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readiness never went false"
            time.sleep(0.02)
        # Not ready, still serving: new connections too, during the grace.
        with httpx.Client(base_url=gateway.url, timeout=5) as fresh:
            assert fresh.get("/free").status_code == 200
        assert json.loads(gateway.client.get("/readyz").text)["status"] == "draining"
        assert gateway.process.wait(15) == 0
    finally:
        gateway.stop()

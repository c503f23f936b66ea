"""The Redis backend against a real redis-server: several `RedisState`s (replicas) share
one store; attacks first (splitting load, crashing holders, hostile names, a spoiled
store, a dead store)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from stockade.state import (
    BreakerOpen,
    GateSpec,
    LocalState,
    Quota,
    QuotaExceeded,
    StateSettings,
    StateUnavailable,
)
from stockade.state.breakers import SharedBreakers
from stockade.state.credit import HOLD
from stockade.state.keys import TenantKeys, token
from stockade.state.redisstate import RETRY_INTERVAL, RedisState
from stockade.state.scripts import FIELDS, bucket_field
from stockade.telemetry.breaker import BreakerConfig, Transition

from .conftest import RedisServer

TIMEOUT = 0.2  # how long a store that fails may take to be found down
# A live store's answers: generous, so a loaded machine is not read as a store gone.
ANSWERED = 2.0


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[list[RedisState]]:
    """Three replicas' state backends on one Redis (fail_closed)."""
    states = [RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                         env={}) for _ in range(3)]
    yield states
    for state in states:
        state.close()


def spec(tenant: str = "acme", function: str = "f", *, lease: float = 30.0,
         breaker: str | None = None, **quota: float) -> GateSpec:
    return GateSpec(function, tenant, Quota(), Quota(**quota),  # type: ignore[arg-type]
                    lease, breaker)


def test_a_tenant_spreading_over_replicas_gets_its_rate_not_three_times(
        replicas: list[RedisState]) -> None:
    gates = [state.gate(spec(rate=2, burst=4)) for state in replicas]
    admitted = refused = 0
    start = time.monotonic()
    for turn in range(60):  # round robin, as a load balancer spreads them
        try:
            gates[turn % 3].admit().release()
            admitted += 1
        except QuotaExceeded as exc:
            assert exc.limit == "rate" and 0 < exc.retry_after <= 0.5
            refused += 1
    elapsed = time.monotonic() - start
    # The burst of 4 plus 2 per second elapsed, however many replicas took them.
    assert 4 <= admitted <= 4 + 2 * elapsed + 1, (admitted, elapsed)
    assert refused == 60 - admitted


def test_concurrency_holds_across_replicas_and_slots_come_back(
        replicas: list[RedisState]) -> None:
    one, two, three = (state.gate(spec(concurrency=2)) for state in replicas)
    first, second = one.admit(), two.admit()
    with pytest.raises(QuotaExceeded) as error:
        three.admit()
    assert error.value.limit == "concurrency" and "tenant acme: 2 concurrent" in str(error.value)
    first.release()
    first.release()  # twice: the second gives nothing back
    three.admit()
    with pytest.raises(QuotaExceeded):
        one.admit()
    second.release()


def test_a_crashed_replicas_leases_expire(redis_server: RedisServer,
                                          replicas: list[RedisState]) -> None:
    crashed = RedisState(StateSettings(redis_server.url), LocalState(), env={})
    gate = crashed.gate(spec(concurrency=2, lease=1.0))
    gate.admit(), gate.admit()
    crashed.client.close()  # it dies holding both slots, never releasing them
    survivor = replicas[0].gate(spec(concurrency=2, lease=1.0))
    with pytest.raises(QuotaExceeded):
        survivor.admit()
    deadline = time.monotonic() + 5.0
    while True:
        try:
            survivor.admit()
            break
        except QuotaExceeded:
            assert time.monotonic() < deadline, "the dead replica's leases never expired"
            time.sleep(0.05)


def test_cpu_per_minute_is_charged_once_for_every_replica(replicas: list[RedisState]) -> None:
    one, two = (state.gate(spec(cpu_per_minute=0.6)) for state in replicas[:2])
    one.admit().release(0.7)  # 0.1 s over a 0.6 s budget refilled at 0.01 s per second
    with pytest.raises(QuotaExceeded) as error:
        two.admit()
    assert error.value.limit == "cpu" and 5 < error.value.retry_after <= 10


def test_one_clients_violations_count_once_on_every_replica(
        replicas: list[RedisState]) -> None:
    """The same client through several replicas is one client: its violations count
    once within the window, and two more clients open the breaker."""
    config = BreakerConfig(threshold=3, window=60, cooldown=30)
    stores = [state.breakers(config, None) for state in replicas]
    for _ in range(4):
        for store in stores:
            assert store.record("function:f", "acme", True, source="10.0.0.1") is None
    assert stores[1].record("function:f", "acme", True, source="10.0.0.2") is None
    transition = stores[2].record("function:f", "acme", True, source="10.0.0.3")
    assert transition is not None and (transition.old, transition.new) == ("closed", "open")
    assert transition.violations == 3


def test_a_breaker_opened_through_one_replica_refuses_on_another_at_once(
        replicas: list[RedisState]) -> None:
    config = BreakerConfig(threshold=3, window=60, cooldown=30)
    seen: list[Transition] = []
    one = replicas[0].breakers(config, seen.append)
    replicas[1].breakers(config, None)
    gate = replicas[1].gate(spec(breaker="function:f"))
    gate.admit().release()
    for _ in range(2):
        assert one.record("function:f", "acme", True) is None
    opened_at = time.monotonic()
    transition = one.record("function:f", "acme", True)
    assert transition is not None and (transition.old, transition.new) == ("closed", "open")
    with pytest.raises(BreakerOpen) as error:
        gate.admit()
    assert time.monotonic() - opened_at < 0.1
    assert "circuit breaker opened after 3 violations" in str(error.value)
    assert 25 < error.value.retry_after <= 30
    assert seen == [transition]
    # Another tenant's function of the same name is not affected.
    replicas[2].gate(spec("other", breaker="function:f")).admit()
    entries = one.entries()
    assert [(e.key, e.tenant, e.state, e.violations) for e in entries] == [
        ("function:f", "acme", "open", 3)]
    assert [e.key for e in one.reset("function:f")] == ["function:f"]
    replicas[2].gate(spec(breaker="function:f")).admit()


def test_a_refusal_names_the_end_the_store_holds_not_this_replicas_cooldown(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    """A breaker opened through a replica with a cooldown of 300 s, refused on one whose
    own is 5 s: the wait told is at most 5 s (then asked again), but the text said the
    breaker was refused until 5 s from now, which was not true. It names the end the
    store holds."""
    from stockade.telemetry.breaker import iso_time

    replicas[0].breakers(BreakerConfig(threshold=1, window=60, cooldown=300), None).record(
        "function:f", "acme", True)
    replicas[1].breakers(BreakerConfig(threshold=1, window=60, cooldown=5), None)
    gate = replicas[1].gate(spec(breaker="function:f"))
    for admit in (gate.admit, lambda: asyncio.run(gate.admit_async())):
        with pytest.raises(BreakerOpen) as error:
            admit()
        gate._refused = None  # asked of the store, not of the cached refusal
        until = float(redis_server.client().hget(  # type: ignore[arg-type]
            gate.keys.breaker, "until"))
        assert f"refused until {iso_time(until)}:" in str(error.value), str(error.value)
        assert 1.0 <= error.value.retry_after <= 5.0


def test_half_open_lets_exactly_one_probe_through_across_replicas(
        replicas: list[RedisState]) -> None:
    config = BreakerConfig(threshold=1, window=60, cooldown=0.2)
    stores = [state.breakers(config, None) for state in replicas]
    stores[0].record("function:f", "acme", True)
    time.sleep(0.3)
    gates = [state.gate(spec(breaker="function:f")) for state in replicas]
    results = []
    for gate in gates:
        try:
            gate.admit()
            results.append("admitted")
        except BreakerOpen:
            results.append("refused")
    assert results == ["admitted", "refused", "refused"]
    # The probe ran clean on replica 0: closed for everyone.
    closed = stores[0].record("function:f", "acme", False)
    assert closed is not None and closed.new == "closed" and closed.denied >= 2
    time.sleep(0.11)  # the refusals cached on replicas 1 and 2 run out
    gates[1].admit(), gates[2].admit()


def test_a_probe_that_never_ran_is_freed_for_one_other_probe_across_replicas(
        replicas: list[RedisState]) -> None:
    """Attack: the probe granted at admission is refused (queue full) or cancelled
    before it runs, every time the breaker half-opens. It is freed, not failed: the
    next admission on any replica probes, and still only one probe is out at a time."""
    config = BreakerConfig(threshold=1, window=60, cooldown=0.2)
    stores = [state.breakers(config, None) for state in replicas]
    stores[0].record("function:f", "acme", True)
    time.sleep(0.3)
    gates = [state.gate(spec(breaker="function:f")) for state in replicas]
    lease = gates[0].admit()
    assert lease.probe
    with pytest.raises(BreakerOpen):
        gates[1].admit()
    stores[0].probe_unused("function:f", "acme")  # replica 0's probe never ran
    lease.release()
    time.sleep(0.11)  # replica 1's cached refusal runs out
    second = gates[1].admit()
    assert second.probe, "the unused probe was not freed"
    with pytest.raises(BreakerOpen):
        gates[2].admit()
    stores[0].probe_unused("function:f", "acme")  # freeing again frees nothing
    time.sleep(0.11)
    with pytest.raises(BreakerOpen):
        gates[2].admit()
    assert [e.state for e in stores[0].entries()] == ["half_open"]
    closed = stores[1].record("function:f", "acme", False)
    assert closed is not None and closed.new == "closed"


def test_only_the_probes_own_run_moves_a_half_open_breaker_across_replicas(
        replicas: list[RedisState]) -> None:
    """Attack: a run admitted while the breaker was closed ends while the half-open probe
    is out, on the probe's replica or another. Its clean end closed the breaker of a
    function that still fails; its violation re-opened it and threw the probe away. Only
    the probe's own run (the one its replica bound to it) moves a half-open breaker."""
    config = BreakerConfig(threshold=1, window=60, cooldown=0.2)
    stores = [state.breakers(config, None) for state in replicas]
    stores[0].record("function:f", "acme", True, holder="before")
    time.sleep(0.3)
    gate = replicas[0].gate(spec(breaker="function:f"))
    lease = gate.admit()
    assert lease.probe
    stores[0].probe_held("function:f", "acme", "probe")
    for store in stores[:2]:  # ordinary runs on the probe's replica and on another
        assert store.record("function:f", "acme", False, holder="ordinary") is None
        assert store.record("function:f", "acme", True, holder="ordinary") is None
        assert store.probe_failed("function:f", "acme", holder="ordinary") is None
    assert [e.state for e in stores[0].entries()] == ["half_open"]
    time.sleep(0.11)
    with pytest.raises(BreakerOpen):  # the probe is still out
        replicas[1].gate(spec(breaker="function:f")).admit()
    closed = stores[0].record("function:f", "acme", False, holder="probe")
    assert closed is not None and (closed.old, closed.new) == ("half_open", "closed")
    lease.release()


def test_a_probe_from_a_client_already_counted_proves_nothing_on_any_replica(
        replicas: list[RedisState]) -> None:
    """Attack: three addresses open the breaker, then one of them takes every half-open
    probe, through any replica, and violates again. Its probe is freed and the breaker
    stays half-open; a client not yet counted still re-opens it."""
    config = BreakerConfig(threshold=3, window=60, cooldown=0.2)
    stores = [state.breakers(config, None) for state in replicas]
    for store, source in zip(stores, ("10.0.0.1", "10.0.0.2", "10.0.0.3"), strict=True):
        store.record("function:f", "acme", True, source=source)
    time.sleep(0.3)
    # What the gateway asks before it lets a probe run (it refuses counted clients).
    assert all(store.counted("function:f", "acme", "10.0.0.1") for store in stores)
    assert not stores[0].counted("function:f", "acme", "10.0.0.4")
    assert not stores[0].counted("function:f", "other", "10.0.0.1")
    for turn in range(3):
        gate = replicas[turn].gate(spec(breaker="function:f"))
        lease = gate.admit()
        assert lease.probe, f"turn {turn}: the known client's probe was not freed"
        stores[turn].probe_held("function:f", "acme", f"probe{turn}")
        assert stores[turn].record("function:f", "acme", True, holder=f"probe{turn}",
                                   source="10.0.0.1") is None
        lease.release()
        time.sleep(0.11)  # refusals cached on the other replicas run out
    assert [e.state for e in stores[0].entries()] == ["half_open"]
    lease = replicas[1].gate(spec(breaker="function:f")).admit()
    assert lease.probe
    stores[1].probe_held("function:f", "acme", "new")
    change = stores[1].record("function:f", "acme", True, holder="new", source="10.0.0.4")
    assert change is not None and (change.old, change.new) == ("half_open", "open")
    lease.release()


def test_a_listed_breaker_counts_only_violations_within_the_window(
        replicas: list[RedisState]) -> None:
    config = BreakerConfig(threshold=3, window=0.3, cooldown=30)
    store = replicas[0].breakers(config, None)
    store.record("function:f", "acme", True, source="10.0.0.1")
    store.record("function:f", "acme", True, source="10.0.0.2")
    assert [e.violations for e in store.entries()] == [2]
    time.sleep(0.4)
    assert [e.violations for e in store.entries()] == [0]
    # Listed without the gateways' setting (`stockade breaker list`): their window.
    assert [e.violations for e in SharedBreakers(
        StateSettings(replicas[0].settings.backend), env={}).entries()] == [0]


HOSTILE = ["a}", "{a}", "}{", "a\nb", "x" * 10240, "acme:q:t", "", "acme}:l:t", "{acme}",
           "acme\r\n*1\r\n$8\r\nFLUSHALL\r\n", "ünï"]


def test_hostile_tenant_names_keep_to_their_own_keys(redis_server: RedisServer,
                                                     replicas: list[RedisState]) -> None:
    seen: set[str] = set()
    for tenant in ["acme", *HOSTILE]:
        keys = TenantKeys.of(tenant, "f", "function:f")
        tag = keys.tenant_quota[keys.tenant_quota.index("{") + 1:keys.tenant_quota.index("}")]
        assert tag == token(tenant) and len(tag) <= 80
        # One slot per tenant (Redis Cluster), every key well-formed and short.
        assert len({key_slot(key.encode()) for key in keys}) == 1
        assert all(key.count("{") == key.count("}") == 1 and "\n" not in key
                   and len(key) < 256 for key in keys)
        assert not seen & set(keys)
        seen |= set(keys)
    # Each hostile tenant gets its own one-request budget; acme's is untouched.
    for tenant in HOSTILE:
        gate = replicas[0].gate(spec(tenant, rate=0.01, burst=1))
        gate.admit()
        with pytest.raises(QuotaExceeded):
            gate.admit()
    replicas[1].gate(spec("acme", rate=0.01, burst=1)).admit()
    assert redis_server.client().dbsize() > 0  # nothing was flushed


def test_a_spoiled_key_fails_one_tenant_not_the_gateway(redis_server: RedisServer) -> None:
    closed = RedisState(StateSettings(redis_server.url), LocalState(), env={})
    opened = RedisState(StateSettings(redis_server.url, "fail_open"),
                        LocalState(degraded=True), env={})
    try:
        client = redis_server.client()
        client.set(TenantKeys.of("spoiled", "f", "-").tenant_quota, "not a hash")
        client.lpush(TenantKeys.of("listed", "f", "-").tenant_leases, "x")
        for tenant in ("spoiled", "listed"):
            with pytest.raises(StateUnavailable) as error:
                closed.gate(spec(tenant, rate=5, concurrency=3)).admit()
            assert "failed to decide" in str(error.value)
            lease = opened.gate(spec(tenant, rate=5, concurrency=3)).admit()
            assert lease.degraded
            lease.release()
        # The store itself is fine: other tenants are decided by it.
        assert not closed.gate(spec("fine", rate=5)).admit().degraded
    finally:
        closed.close()
        opened.close()


def test_a_stopped_store_fails_closed_within_a_timeout_and_recovers(
        redis_server: RedisServer) -> None:
    counted: list[str] = []
    state = RedisState(StateSettings(redis_server.url, timeout=TIMEOUT), LocalState(),
                       counted.append, env={})
    try:
        gate = state.gate(spec(concurrency=5))
        gate.admit().release()
        redis_server.stop()
        start = time.monotonic()
        with pytest.raises(StateUnavailable) as error:
            gate.admit()
        assert time.monotonic() - start < TIMEOUT + 0.5
        assert "unreachable" in str(error.value) and "fail_closed" in str(error.value)
        assert counted == ["fail_closed"]
        redis_server.start()
        deadline = time.monotonic() + RETRY_INTERVAL + 5.0
        while True:
            try:
                assert not gate.admit().degraded
                break
            except StateUnavailable:
                assert time.monotonic() < deadline, "never reconnected"
                time.sleep(0.05)
    finally:
        state.close()


def test_a_silent_store_fails_open_within_a_timeout(tmp_path: Path) -> None:
    # A peer that accepts connections and never answers: reads time out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        counted: list[str] = []
        state = RedisState(StateSettings(url, "fail_open", TIMEOUT),
                           LocalState(tmp_path, 0, degraded=True), counted.append, env={})
        try:
            gate = state.gate(spec(concurrency=1))
            start = time.monotonic()
            lease = gate.admit()
            assert time.monotonic() - start < TIMEOUT + 0.5
            assert lease.degraded and counted == ["fail_open"]
            # This replica's own limits hold meanwhile, without waiting on the store.
            start = time.monotonic()
            with pytest.raises(QuotaExceeded):
                gate.admit()
            assert time.monotonic() - start < 0.1
            lease.release()
            gate.admit().release()
        finally:
            state.close()


def test_admissions_from_many_threads_never_exceed_the_limit(
        replicas: list[RedisState]) -> None:
    gates = [state.gate(spec(concurrency=3)) for state in replicas]
    held = []
    lock = threading.Lock()

    def take(gate_index: int) -> None:
        try:
            lease = gates[gate_index % 3].admit()
        except QuotaExceeded:
            return
        with lock:
            held.append(lease)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held) == 3


def test_on_an_event_loop_a_release_rides_with_the_next_admission(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    import asyncio

    one, other = replicas[0].gate(spec(concurrency=1)), replicas[1].gate(spec(concurrency=1))

    async def scenario() -> None:
        one.admit().release()  # queued, not sent
        with pytest.raises(QuotaExceeded):
            other.admit()  # the slot is still taken in Redis: never less than the limit
        redis_server.client().script_flush()  # as after a restart: scripts reloaded
        one.admit().release()  # the release went first, in the same pipeline
        await asyncio.sleep(0.05)  # no admission came: the timer sent the release
        other.admit().release()

    asyncio.run(scenario())


def test_admissions_of_one_loop_turn_share_a_pipeline_and_the_limit(
        replicas: list[RedisState]) -> None:
    import asyncio

    gates = [state.gate(spec(concurrency=5)) for state in replicas]

    async def scenario() -> list[object]:
        return await asyncio.gather(*(gates[i % 3].admit_async() for i in range(40)),
                                    return_exceptions=True)

    results = asyncio.run(scenario())
    refusals = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(results) - len(refusals) == 5 and len(refusals) == 35


def evalsha_calls(server: RedisServer) -> int:
    stats: dict[str, dict[str, int]] = server.client().info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_request_is_one_script_and_releases_ride_only_with_their_own_tenant(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    import asyncio

    state = replicas[0]
    hostile = "{acme}\n" + "x" * 500  # would share acme's slot if its name leaked into a key
    gates = {tenant: state.gate(spec(tenant, concurrency=1, cpu_per_minute=0.6))
             for tenant in ("acme", hostile)}
    other = replicas[1].gate(spec("acme", concurrency=1, cpu_per_minute=0.6))

    async def scenario() -> int:
        state.gate(spec("warm-up", rate=1000)).admit()  # the script loads once per store
        before = evalsha_calls(redis_server)
        for _ in range(5):  # no await: the timer cannot send a release in between
            for gate in gates.values():
                gate.admit().release(0.01)  # each admission carries its tenant's release
        calls = evalsha_calls(redis_server) - before
        gates["acme"].admit().release(0.2)  # 0.26 s charged to acme so far
        with pytest.raises(QuotaExceeded):
            other.admit()  # acme's release is still queued: its slot is taken
        await asyncio.sleep(0.05)  # the timer sent it, alone
        other.admit().release(0.4)  # 0.66 s: over acme's 0.6 s, charged once
        await asyncio.sleep(0.05)
        with pytest.raises(QuotaExceeded) as error:
            gates["acme"].admit()
        assert error.value.limit == "cpu"
        gates[hostile].admit().release()  # the hostile tenant's budget is its own
        return calls

    calls = asyncio.run(scenario())
    assert calls == 10  # one EVALSHA per request: no release of its own
    slots = {key_slot(key.encode()) for key in redis_server.client().keys("stockade:{acme}*")}
    assert len(slots) == 1


# -- credits: admissions granted ahead and spent by one replica (see state/credit.py) --


async def burst(gates: list[Any], count: int) -> list[Any]:
    """`count` admissions arriving at once, spread over `gates` (replicas)."""
    return await asyncio.gather(*(gates[i % len(gates)].admit_async() for i in range(count)),
                                return_exceptions=True)


def admitted(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, QuotaExceeded):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def test_bursts_at_many_replicas_never_get_more_than_the_rate(
        redis_server: RedisServer) -> None:
    """A tenant at (and far above) its rate, bursting through five busy replicas at once:
    credits never let it past burst + rate x elapsed (GCRA's own bound)."""
    states = [RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                         env={}) for _ in range(5)]
    gates = [state.gate(spec(rate=200, burst=200, concurrency=1000)) for state in states]

    async def scenario() -> tuple[int, float, int]:
        start = time.monotonic()
        taken = 0
        while time.monotonic() - start < 1.5:  # ~20x the rate, in bursts of 40
            leases = admitted(await burst(gates, 40))
            taken += len(leases)
            for lease in leases:
                lease.release()
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - start
        await asyncio.sleep(3 * HOLD + 0.1)  # credits settle, releases flush
        held = redis_server.client().zcard(gates[0].keys.tenant_leases)
        return taken, elapsed, int(held)  # type: ignore[arg-type]

    try:
        taken, elapsed, held = asyncio.run(scenario())
    finally:
        for state in states:
            state.close()
    assert taken <= 200 + 200 * elapsed + 1, (taken, elapsed)
    assert taken >= 200 + 200 * (elapsed - 0.5), (taken, elapsed)  # nothing hoarded
    assert held == 0  # every slot of every credit went back


def test_a_busy_replica_spends_credits_and_returns_what_it_did_not_spend(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    """Far below its limits, a busy gate asks Redis for a few admissions at a time
    (fewer scripts than requests); what it does not spend (rate and slots) goes back."""
    gates = [state.gate(spec(rate=1000, burst=1000, concurrency=200)) for state in replicas]

    async def scenario() -> tuple[int, int, float]:
        for lease in admitted(await burst(gates, 3)):  # scripts loaded
            lease.release()
        before = evalsha_calls(redis_server)
        taken = 0
        for _ in range(5):  # 12 requests a millisecond-ish window per replica
            leases = admitted(await burst(gates, 36))
            taken += len(leases)
            for lease in leases:
                lease.release(0.001)
        calls = evalsha_calls(redis_server) - before
        await asyncio.sleep(3 * HOLD + 0.1)
        client = redis_server.client()
        tat = float(client.hget(gates[0].keys.tenant_quota,  # type: ignore[arg-type]
                                bucket_field(1000, 1000)))
        seconds, micros = client.time()  # type: ignore[misc]
        now = seconds + micros / 1e6
        return taken, calls, tat - now

    taken, calls, ahead = asyncio.run(scenario())
    assert taken == 180  # far below the limits: nothing refused
    assert calls < taken / 3, (calls, taken)
    # Every granted admission not spent was refunded: the rate's debt is what was used
    # (183 requests at 1000/s: tat at most 0.183 s ahead of now, not more).
    assert ahead <= 0.183 + 1e-6, ahead
    assert redis_server.client().zcard(gates[0].keys.tenant_leases) == 0


def test_credits_never_hold_more_slots_than_the_concurrency_limit(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    """Concurrency 20 over three busy replicas: one burst of 90 at once gets 20, the
    slots in Redis never exceed 20, and after release every slot is free again."""
    gates = [state.gate(spec(concurrency=20)) for state in replicas]

    async def scenario() -> tuple[int, int, int, int]:
        for lease in admitted(await burst(gates, 9)):  # the gates are busy: credits
            lease.release()
        await asyncio.sleep(0)
        leases = admitted(await burst(gates, 90))
        client = redis_server.client()
        held = int(client.zcard(gates[0].keys.tenant_leases))  # type: ignore[arg-type]
        for lease in leases:
            lease.release()
        await asyncio.sleep(3 * HOLD + 0.1)
        after = int(client.zcard(gates[0].keys.tenant_leases))  # type: ignore[arg-type]
        again = len(admitted(await burst(gates[2:], 30)))
        return len(leases), held, after, again

    taken, held, after, again = asyncio.run(scenario())
    assert taken <= 20 and held <= 20, (taken, held)
    assert taken >= 10  # half the slots at least went to requests, not to credits
    assert after == 0
    assert again == 20  # one replica can have all of them: nothing hoarded elsewhere


def test_a_breaker_opened_elsewhere_ends_a_busy_replicas_credit(
        replicas: list[RedisState]) -> None:
    """A replica spending credits for a function whose breaker opens through another
    replica refuses every request that comes 100 ms after it opened."""
    config = BreakerConfig(threshold=1, window=60, cooldown=30)
    store = replicas[0].breakers(config, None)
    replicas[1].breakers(config, None)
    gate = replicas[1].gate(spec(breaker="function:f", rate=10000, burst=10000))

    async def scenario() -> list[tuple[float, bool]]:
        for turn in range(20):
            assert len(admitted(await burst([gate], 20))) == 20
            if turn >= 2 and gate._credit is not None:
                break  # busy: it spends a credit now, of tens of admissions
        else:
            pytest.fail("the busy gate never got a credit")
        store.record("function:f", "acme", True)  # opened through replica 0
        opened = time.monotonic()
        seen: list[tuple[float, bool]] = []
        while time.monotonic() - opened < 0.3:
            sent = time.monotonic() - opened
            try:
                (await gate.admit_async()).release()
                seen.append((sent, True))
            except BreakerOpen:
                seen.append((sent, False))
            await asyncio.sleep(0.002)  # paced: a credit would last
        return seen

    seen = asyncio.run(scenario())
    late = [allowed for sent, allowed in seen if sent >= 0.1]
    assert late and not any(late), seen


def test_a_gate_without_quota_or_breaker_asks_redis_nothing(
        redis_server: RedisServer, replicas: list[RedisState]) -> None:
    replicas[0].gate(spec("warm", rate=5)).admit()
    before = evalsha_calls(redis_server)
    gate = replicas[0].gate(spec("free"))
    gate.admit().release()
    results = asyncio.run(burst([gate], 10))
    assert len(admitted(results)) == 10
    assert evalsha_calls(redis_server) == before


def test_a_rate_limit_stores_its_times_exactly(redis_server: RedisServer) -> None:
    """Lua's `tostring` keeps 14 digits: 100 µs of a time since the epoch. A tenant's
    theoretical arrival time then did not move by an interval under 50 µs (every
    request at 20,000/s and up admitted) and moved by a rounded one below (found by
    review). One admission at 3/s moves it by a third of a second, to the microsecond."""
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        state.gate(spec(tenant="exact", rate=3, burst=1)).admit().release()
    finally:
        state.close()
    keys = TenantKeys.of("exact", "f", "")
    stored = redis_server.client().hget(keys.tenant_quota, bucket_field(3, 1))
    assert stored is not None
    decimals = stored.split(".")[1] if "." in stored else ""
    assert len(decimals) >= 6, stored  # the 14 digits of `tostring` leave 4


def test_a_bucket_far_ahead_outlives_the_hour_its_key_was_kept(
        redis_server: RedisServer) -> None:
    # A bucket's key expired an hour after its last admission whatever its window: at one
    # request in 10,000 s the next was admitted an hour later, and a rate of one a minute
    # with a burst of 100 got the whole burst back after an hour idle.
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        state.gate(spec(tenant="slow", rate=1e-4, burst=1)).admit().release()
    finally:
        state.close()
    keys = TenantKeys.of("slow", "f", "")
    assert redis_server.client().ttl(keys.tenant_quota) >= 10_000


def _spend(gate: Any, most: int = 1000) -> int:
    """Admissions `gate` gets before its first refusal."""
    for taken in range(most):
        try:
            gate.admit().release()
        except QuotaExceeded:
            return taken
    return most


def _redis_now(server: RedisServer) -> float:
    seconds, micros = server.client().time()
    return float(seconds) + micros / 1e6


def test_a_reload_to_a_faster_rate_takes_effect_at_once(redis_server: RedisServer) -> None:
    # A bucket an earlier, slower manifest spent (100 at one in 1,000 s: its `tat`
    # 100,000 s ahead) held after a reload to 100/s until it caught up, and the
    # refusals told an hour. Now it is at most the new window ahead: a refusal tells
    # the real wait, and a retry after it is admitted.
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        assert _spend(state.gate(spec(tenant="reload", rate=1e-3, burst=100))) == 100
        after = state.gate(spec(tenant="reload", rate=100, burst=100))
        admitted, deadline = 0, time.monotonic() + 2.0
        while admitted < 5:
            try:
                after.admit().release()
                admitted += 1
            except QuotaExceeded as refused:
                assert 0 < refused.retry_after <= 0.0101, refused.retry_after  # an interval
                time.sleep(refused.retry_after)
                after.admit().release()  # told no shorter than the real wait
                admitted += 1
            assert time.monotonic() < deadline, admitted
    finally:
        state.close()


def _round_robin(gates: list[Any], seconds: float) -> tuple[list[int], float]:
    """Requests sent round robin over `gates` (as a load balancer spreads them) for
    `seconds`: the admissions of each gate, and the time they took."""
    taken = [0] * len(gates)
    start = time.monotonic()
    turn = 0
    while time.monotonic() - start < seconds:
        index = turn % len(gates)
        turn += 1
        try:
            gates[index].admit().release()
            taken[index] += 1
        except QuotaExceeded:
            pass
    return taken, time.monotonic() - start


def test_a_rollout_gives_a_tenant_at_most_each_manifests_own_limit(
        redis_server: RedisServer) -> None:
    # Mid-rollout, three replicas say 1000/s with a burst of 1, one says 1/s with a
    # burst of 100. They shared one bucket, and the fast ones reset it to their own
    # window at every request (refused ones too): 24,030 admitted in 2 s where the
    # strict manifest allows 102 and the loose one 2,001. Each manifest's bucket is its
    # own: the tenant gets at most the sum of the two limits.
    states = [RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                         env={}) for _ in range(4)]
    try:
        gates = [state.gate(spec(tenant="rolling", rate=1000, burst=1))
                 for state in states[:3]]
        gates.append(states[3].gate(spec(tenant="rolling", rate=1, burst=100)))
        taken, elapsed = _round_robin(gates, 2.0)
    finally:
        for state in states:
            state.close()
    loose, strict = sum(taken[:3]), taken[3]
    assert strict <= 100 + 1 * elapsed + 1, (strict, elapsed)
    assert loose <= 1 + 1000 * elapsed + 1, (loose, elapsed)


def test_a_reload_to_a_slower_rate_is_not_evaded(redis_server: RedisServer) -> None:
    # A rolling reload from 100/s (a burst of 100) to 1/s (a burst of 2): a replica not
    # yet reloaded reset the bucket to its own, shorter window at each request, so the
    # reloaded one admitted every other request. The slower limit holds on the replicas
    # that have it, whatever the others do, and once all have it.
    fast, slow = {"rate": 100, "burst": 100}, {"rate": 1, "burst": 2}
    states = [RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                         env={}) for _ in range(2)]
    try:
        old = [state.gate(spec(tenant="slowing", **fast)) for state in states]
        _round_robin(old, 0.3)
        new = [state.gate(spec(tenant="slowing", **slow)) for state in states]
        reloaded = time.monotonic()
        during, _ = _round_robin([old[0], new[1]], 0.7)  # one replica reloaded
        after, _ = _round_robin(new, 0.5)  # both
        elapsed = time.monotonic() - reloaded
    finally:
        for state in states:
            state.close()
    assert during[1] + sum(after) <= 2 + 1 * elapsed + 1, (during, after, elapsed)



def test_a_quota_hash_keeps_the_buckets_ahead_however_many_reloads(
        redis_server: RedisServer) -> None:
    # Each quota's bucket is a field of its own: twenty reloads, each to a new rate,
    # leave twenty buckets ahead, all kept (dropping one gave its quota its burst
    # back); past the bound, those caught up go.
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        state.gate(spec(tenant="fickle", rate=1000, burst=1)).admit().release()
        time.sleep(0.01)  # caught up: as good as none
        for n in range(1, 21):
            state.gate(spec(tenant="fickle", rate=1e-3 * n, burst=1)).admit().release()
        with pytest.raises(QuotaExceeded):  # the bucket in use is still spent
            state.gate(spec(tenant="fickle", rate=2e-2, burst=1)).admit()
        with pytest.raises(QuotaExceeded):  # and so is the first, furthest ahead
            state.gate(spec(tenant="fickle", rate=1e-3, burst=1)).admit()
    finally:
        state.close()
    stored = redis_server.client().hgetall(TenantKeys.of("fickle", "f", "").tenant_quota)
    assert len(stored) == 20 > FIELDS, stored
    assert bucket_field(1000, 1) not in stored, stored


def test_a_refusal_after_a_reload_is_told_its_own_buckets_wait(
        redis_server: RedisServer) -> None:
    # A reload from one in 1,000 s to one in 100 s (a burst of 100 each) starts the new
    # quota's bucket: its burst, then a refusal telling the wait of that bucket (one
    # interval at most), while the bucket the old quota filled stays as it was.
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        assert _spend(state.gate(spec(tenant="reload", rate=1e-3, burst=100))) == 100
        after = state.gate(spec(tenant="reload", rate=1e-2, burst=100))
        for _ in range(100):
            after.admit().release()
        with pytest.raises(QuotaExceeded) as refused:
            after.admit()
    finally:
        state.close()
    stored = redis_server.client().hgetall(TenantKeys.of("reload", "f", "").tenant_quota)
    now = _redis_now(redis_server)
    tat = float(stored[bucket_field(1e-2, 100)])
    real = tat - 100 * 100 + 100 - now  # the next admission, from now
    assert real <= refused.value.retry_after <= 100, (real, refused.value.retry_after)
    assert float(stored[bucket_field(1e-3, 100)]) - now > 99_000, stored


def test_a_bucket_is_kept_as_long_as_its_window(redis_server: RedisServer) -> None:
    # At one in 100,000 s with a burst of 100, a spent bucket is 115.7 days ahead: its
    # key expired after 30 days idle and the tenant had all 100 back, not ~26.
    state = RedisState(StateSettings(redis_server.url, timeout=ANSWERED), LocalState(),
                       env={})
    try:
        assert _spend(state.gate(spec(tenant="patient", rate=1e-5, burst=100))) == 100
    finally:
        state.close()
    ttl = redis_server.client().ttl(TenantKeys.of("patient", "f", "").tenant_quota)
    assert 100 / 1e-5 - 120 <= ttl <= 100 / 1e-5 + 120, ttl


@pytest.mark.parametrize(("quota", "charge", "limit", "longest"), [
    ({"cpu_per_minute": 1e-6}, 200.0, "cpu", 60.0),  # refused again then, if still owed
    ({"rate": 1e-10, "burst": 1}, 0.0, "rate", 2.0**33),
], ids=["cpu", "rate"])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_wait_past_what_a_reply_may_hold_is_still_a_refusal(
        redis_server: RedisServer, tmp_path: Path, quota: dict[str, float], charge: float,
        limit: str, longest: float, path: str) -> None:
    # 200 s of CPU against a microsecond a minute is 380 years of waiting (1e10 s for
    # one request at 1e-10/s): past the longest wait a reply may hold, so the honest
    # refusal was read as a malformed reply and `fail_open` admitted the tenant.
    counted: list[str] = []
    state = RedisState(StateSettings(redis_server.url, "fail_open", ANSWERED),
                       LocalState(tmp_path, 0, degraded=True), counted.append, env={})
    try:
        gate = state.gate(spec(tenant="debtor", **quota))
        gate.admit().release(charge)
        with pytest.raises(QuotaExceeded) as refused:
            if path == "sync":
                gate.admit()
            else:
                asyncio.run(gate.admit_async())
        if path == "async" and limit == "rate":  # and those a grant refuses beyond one
            results = asyncio.run(burst([state.gate(spec(tenant="many", **quota))], 4))
            assert len(admitted(results)) == 1
    finally:
        state.close()
    assert refused.value.limit == limit and refused.value.http_status == 429
    assert 0 < refused.value.retry_after <= longest, refused.value.retry_after
    assert counted == []

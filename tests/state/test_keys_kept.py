"""How long the shared state's keys live and which fields they keep, against a real
redis-server: a lease set outlives every lease it holds, and a quota's hash never drops
a bucket that is still ahead (either gave a tenant more than its limits)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from stockade.state import GateSpec, LocalState, Quota, QuotaExceeded, StateSettings
from stockade.state.keys import TenantKeys
from stockade.state.redisstate import RedisState
from stockade.state.scripts import FIELDS, bucket_field

from .conftest import RedisServer

TIMEOUT = 0.5


@pytest.fixture
def state(redis_server: RedisServer) -> Iterator[RedisState]:
    """One replica's state backend on the test's Redis (fail_closed)."""
    backend = RedisState(StateSettings(redis_server.url, timeout=TIMEOUT), LocalState(),
                         env={})
    yield backend
    backend.close()


def _spend(gate: object, most: int = 1000) -> int:
    """Admissions `gate` gets before its first refusal."""
    for taken in range(most):
        try:
            gate.admit().release()  # type: ignore[attr-defined]
        except QuotaExceeded:
            return taken
    return most


def test_a_short_lease_never_shortens_the_tenant_lease_set_a_long_one_needs(
        redis_server: RedisServer, state: RedisState) -> None:
    # The tenant's lease set is shared by its functions: a function with a short lease,
    # admitted once, set its expiry to its own lease plus a minute, though a long run of
    # another function held a lease for an hour. With no admission for a minute the
    # set expired, every replica forgot the running slot, and a tenant with a
    # concurrency of 2 ran 3 at once (found by review).
    other = RedisState(StateSettings(redis_server.url, timeout=TIMEOUT), LocalState(),
                       env={})
    tenant = Quota(concurrency=2)
    try:
        long_run = state.gate(GateSpec("long", "acme", Quota(), tenant, 3600.0))
        short = other.gate(GateSpec("short", "acme", Quota(), tenant, 0.5))
        held = long_run.admit()
        short.admit().release()
        other.flush()
        leases = TenantKeys.of("acme", "long", "").tenant_leases
        client = redis_server.client()
        ttl = client.ttl(leases)
        assert client.zcard(leases) == 1
        assert ttl >= 3600, ttl  # the long run's lease, and a margin
        held.release()
    finally:
        other.close()


def test_a_lease_set_covers_its_furthest_lease_whoever_writes_last(
        redis_server: RedisServer, state: RedisState) -> None:
    # The function's own lease set too: a reload to a shorter lease (a shorter timeout)
    # must not cut the expiry the runs started before it rely on.
    before = state.gate(GateSpec("f", "acme", Quota(concurrency=5), Quota(), 600.0))
    after = state.gate(GateSpec("f", "acme", Quota(concurrency=5), Quota(), 1.0))
    held = before.admit()
    after.admit()
    leases = TenantKeys.of("acme", "f", "").function_leases
    assert redis_server.client().ttl(leases) >= 600
    held.release()


def test_a_bucket_still_ahead_is_never_dropped_however_many_manifests(
        redis_server: RedisServer, state: RedisState) -> None:
    # Nine replicas on nine manifests (a long rolling reload): past eight fields the
    # hash kept the four buckets furthest ahead, so the quota least far ahead lost its
    # bucket each time another wrote, and got its burst back: 25 admitted where 5 were
    # allowed (found by review).
    def gate(rate: float) -> object:
        return state.gate(GateSpec("f", "acme", Quota(rate=rate, burst=5), Quota(), 10.0))

    start = time.monotonic()
    assert _spend(gate(1.0)) == 5  # 5 s ahead
    for n in range(8):
        assert _spend(gate(0.5 - n * 0.01)) == 5  # each 10 s ahead, or more
    again = _spend(gate(1.0))  # a fresh gate: no refusal cached here
    elapsed = time.monotonic() - start
    assert again <= 1 * elapsed + 1, (again, elapsed)
    stored = redis_server.client().hgetall(TenantKeys.of("acme", "f", "").function_quota)
    assert len(stored) == 9, stored


def test_only_buckets_count_toward_the_bound_of_a_tenants_hash(
        redis_server: RedisServer, state: RedisState) -> None:
    # A tenant's hash also holds its CPU budget (cpu, cpu_at, charged): counted as
    # fields, they made it prune its caught-up buckets at six, not eight.
    def gate(rate: float) -> object:
        return state.gate(GateSpec("f", "acme", Quota(),
                                   Quota(rate=rate, burst=1, cpu_per_minute=60.0), 10.0))

    gate(1000.0).admit().release(0.001)  # the CPU fields
    for n in range(1, FIELDS):
        gate(1000.0 + n).admit().release()
    stored = redis_server.client().hgetall(TenantKeys.of("acme", "f", "").tenant_quota)
    assert {"cpu", "cpu_at", "charged"} <= set(stored), stored
    assert sum(field.startswith("tat") for field in stored) == FIELDS, stored
    assert bucket_field(1000.0, 1) in stored, stored


def test_buckets_caught_up_go_once_the_hash_holds_more_than_its_bound(
        redis_server: RedisServer, state: RedisState) -> None:
    # One caught up is as good as none: past the bound, those go, the others all stay
    # (each until it catches up: as many as the manifests in flight, no more).
    for n in range(1, FIELDS + 1):
        state.gate(GateSpec("f", "acme", Quota(), Quota(rate=1000.0 * n, burst=1),
                            10.0)).admit().release()
    time.sleep(0.01)  # all caught up
    for n in range(1, 21):
        state.gate(GateSpec("f", "acme", Quota(), Quota(rate=1e-3 * n, burst=1),
                            10.0)).admit().release()
    stored = redis_server.client().hgetall(TenantKeys.of("acme", "f", "").tenant_quota)
    assert sorted(stored) == sorted(bucket_field(1e-3 * n, 1) for n in range(1, 21)), stored


def test_an_admission_reads_the_whole_hash_only_when_it_makes_a_bucket(
        redis_server: RedisServer, state: RedisState) -> None:
    # Past the bound, every admission read the whole hash, even one updating its own
    # bucket: with 2,000 buckets still ahead (as many manifests, each admitted once
    # within its window) 19 µs of the store's time became 813 µs per admission, and
    # 20,000 took 11.4 ms, every tenant waiting behind it (found by review).
    def gate(rate: float) -> object:
        return state.gate(GateSpec("f", "acme", Quota(rate=rate, burst=100), Quota(),
                                   10.0))

    for n in range(4 * FIELDS):
        gate(1e-3 * (2 + n / 100)).admit().release()  # each ahead for hours
    last = gate(1e-3)
    last.admit().release()  # its bucket made: the hash read once
    client = redis_server.client()
    client.config_resetstat()
    for _ in range(20):
        last.admit().release()
    stats = client.info("commandstats")
    assert "cmdstat_hgetall" not in stats, stats.get("cmdstat_hgetall")
    assert stats["cmdstat_evalsha"]["calls"] >= 20, stats["cmdstat_evalsha"]
    stored = client.hgetall(TenantKeys.of("acme", "f", "").function_quota)
    assert len(stored) == 4 * FIELDS + 1, stored  # every bucket still ahead kept

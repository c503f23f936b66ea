"""How soon a slot given back on one replica is free on the others, against a real
redis-server: a credit's slot at a tenant's concurrency limit, and a tenant's release
while another tenant spends credits on the same replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from stockade.state import GateSpec, Quota
from stockade.state.credit import HOLD
from stockade.state.redisstate import RedisState

from .conftest import RedisServer, connected_state

TIMEOUT = 1.0


@pytest.fixture
def state(redis_server: RedisServer) -> Iterator[RedisState]:
    """One replica's state backend on the test's Redis (fail_closed)."""
    with connected_state(redis_server.url, TIMEOUT) as backend:
        yield backend


async def _freed_after(redis_server: RedisServer, leases: str) -> float:
    """Seconds until the store holds no lease in `leases` (1 s at most)."""
    client = redis_server.client()
    began = time.monotonic()
    while client.zcard(leases) and time.monotonic() - began < 1.0:
        await asyncio.sleep(0.001)
    return time.monotonic() - began


def test_a_slot_at_the_concurrency_limit_goes_back_as_its_run_ends(
        redis_server: RedisServer, state: RedisState) -> None:
    # A busy gate of a tenant with a concurrency of 1 was granted several admissions
    # with its one slot: the slot went back to the credit as the run ended, not to the
    # store, and stayed taken there until the credit settled (two holds): another
    # replica refused the tenant for ~104 ms with nothing running (found by review).
    gate = state.gate(GateSpec("f", "solo", Quota(), Quota(concurrency=1), 10.0))

    async def scenario() -> float:
        for _ in range(10):  # a steady client: the gate asks for grants of several
            (await gate.admit_async()).release()
            await asyncio.sleep(0.01)
        (await gate.admit_async()).release()
        return await _freed_after(redis_server, gate.keys.tenant_leases)

    took = asyncio.run(scenario())
    assert took < HOLD, took


def test_a_tenants_credit_does_not_hold_back_another_tenants_release(
        redis_server: RedisServer, state: RedisState) -> None:
    # Releases waited a hold (50 ms) for an admission to carry them whenever any gate
    # of any tenant held a credit, so one tenant's traffic delayed every other's
    # slots (found by review); only the releasing tenant's own credit is worth it.
    busy = state.gate(GateSpec("f", "busy", Quota(), Quota(rate=1e5, burst=1e5), 10.0))
    quiet = state.gate(GateSpec("f", "quiet", Quota(), Quota(concurrency=1), 10.0))

    async def scenario() -> float:
        for _ in range(4):  # busy: its grants carry credits
            for lease in await asyncio.gather(*(busy.admit_async() for _ in range(5))):
                lease.release()
        assert state.holding, "the busy tenant holds no credit"
        (await quiet.admit_async()).release()
        return await _freed_after(redis_server, quiet.keys.tenant_leases)

    took = asyncio.run(scenario())
    assert took < HOLD / 2, took

"""Releases across an outage, against a real redis-server paused with SIGSTOP: slots
given back while the store is down, or by a round trip that failed, are freed once it
answers again, not when their leases expire; and nothing that is not idempotent (a
refund, a CPU charge) is sent twice.

Found by review: releases held while the store was marked down were dropped at the
first retry that failed (a connection not made to a store still paused), and those of
a round trip that failed once sent were dropped at once: after an outage of more than
a second a tenant's slots stayed taken until their leases expired (at a concurrency of
1, the tenant was refused for the lease's length).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stockade.state import GateSpec, LocalState, Quota, StateSettings, StateUnavailable
from stockade.state.redisstate import RETRY_INTERVAL, RedisState
from stockade.state.scripts import bucket_field

from .conftest import RedisServer, SlowProxy, connected_state

TIMEOUT = 0.5
LEASE = 30.0  # far longer than the test: a slot freed only by its expiry stays taken
RATE, BURST = 0.01, 5  # a refund moves the tenant's `tat` back 100 s
CPU_PER_MINUTE = 600.0


@pytest.fixture
def state(redis_server: RedisServer) -> Iterator[RedisState]:
    """One replica's state backend on the test's Redis (fail_closed)."""
    with connected_state(redis_server.url, TIMEOUT) as backend:
        yield backend


async def _until(done: Callable[[], object], seconds: float) -> bool:
    """Poll `done()` every 10 ms for `seconds` at most; its last answer."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return bool(done())


def test_releases_held_through_an_outage_free_their_slots_once_it_answers(
        redis_server: RedisServer, state: RedisState) -> None:
    tenant = Quota(concurrency=2, rate=RATE, burst=BURST, cpu_per_minute=CPU_PER_MINUTE)
    gate = state.gate(GateSpec("f", "acme", Quota(), tenant, LEASE))
    client = redis_server.client()
    first, second = gate.admit(), gate.admit()  # off a loop: no credit, two slots taken
    assert client.zcard(gate.keys.tenant_leases) == 2
    bucket = bucket_field(RATE, BURST)
    tat = float(client.hget(gate.keys.tenant_quota, bucket))  # type: ignore[arg-type]
    process = redis_server.process
    assert process is not None

    async def scenario() -> None:
        os.kill(process.pid, signal.SIGSTOP)
        try:
            # Sent on the open connection, then no answer: the store is marked down.
            # Redis runs what it was sent once it goes on, so this refund and this
            # release reach it once; sent again, the refund would count twice.
            state.queue_refund(gate, 1)
            first.release(0.25)
            assert await _until(lambda: state._down_since is not None, TIMEOUT + 1.0)
            retry_at = state._retry_at
            # Marked down: held, not sent.
            second.release(0.5)
            # The first retry fails too (a connection to a paused store is not made),
            # and marks it down again.
            assert await _until(lambda: state._retry_at > retry_at,
                                RETRY_INTERVAL + 4 * TIMEOUT + 1.0), "never retried"
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # The store answers again: the held releases go with the next retry, well
        # before the leases expire.
        await _until(lambda: not client.zcard(gate.keys.tenant_leases),
                     RETRY_INTERVAL + 3.0)

    began = time.monotonic()
    asyncio.run(scenario())
    assert client.zrange(gate.keys.tenant_leases, 0, -1) == []
    assert time.monotonic() - began < LEASE / 3
    assert state._down_since is None  # said to answer again
    # The refund counted once (100 s back), the CPU of each run was charged once.
    after = float(client.hget(gate.keys.tenant_quota, bucket))  # type: ignore[arg-type]
    assert after == pytest.approx(tat - 1 / RATE, abs=1e-3)
    charged = float(client.hget(gate.keys.tenant_quota, "charged"))  # type: ignore[arg-type]
    assert charged == pytest.approx(0.75)


def test_a_release_an_admission_carried_into_a_failed_round_trip_is_sent_again(
        redis_server: RedisServer) -> None:
    # The admission carrying the release is sent, never answered (it never reached the
    # store): its release goes with the next round trip, its slot only (the store may
    # have run it: a CPU charge sent again would count twice).
    proxy = SlowProxy(redis_server.port)
    state = RedisState(StateSettings(proxy.url(), timeout=TIMEOUT), LocalState(), env={})
    try:
        assert state.connect()
        tenant = Quota(concurrency=2, cpu_per_minute=CPU_PER_MINUTE)
        gate = state.gate(GateSpec("f", "acme", Quota(), tenant, LEASE))
        client = redis_server.client()
        first, second = gate.admit(), gate.admit()
        assert client.zcard(gate.keys.tenant_leases) == 2

        async def scenario() -> None:
            proxy.swallow = True
            first.release(0.25)  # queued: the next admission of the tenant carries it
            with pytest.raises(StateUnavailable):
                await gate.admit_async()
            assert await _until(lambda: state._down_since is not None, 1.0)
            proxy.swallow = False
            leases = gate.keys.tenant_leases
            await _until(lambda: client.zcard(leases) != 2, RETRY_INTERVAL + 3.0)

        began = time.monotonic()
        asyncio.run(scenario())
        assert client.zcard(gate.keys.tenant_leases) == 1  # the second run's, still going
        assert time.monotonic() - began < LEASE / 3
        assert state._down_since is None
        second.release()
    finally:
        state.close()
        proxy.close()


def test_a_store_back_with_a_failing_handshake_is_not_asked_again_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # After an outage the store comes back, but answers the connection's handshake with
    # an error (here `CLIENT` renamed: redis-py's SETNAME fails): nothing of a flush is
    # sent, and the store is not marked down again. The held release waited for nothing:
    # a flush every ~2 ms, each with a new connection (found by review).
    server = RedisServer(tmp_path)
    try:
        with connected_state(server.url, TIMEOUT) as state:
            gate = state.gate(GateSpec("f", "acme", Quota(),
                                       Quota(concurrency=2, cpu_per_minute=CPU_PER_MINUTE),
                                       LEASE))
            lease = gate.admit()
            server.stop()
            flushes = []
            flush = state.flush
            monkeypatch.setattr(state, "flush", lambda: (flushes.append(1), flush())[1])

            async def scenario() -> float:
                lease.release(0.25)
                assert await _until(lambda: state._retry_at, 1.0)
                server.options = ["--rename-command", "CLIENT", "CLIENTX"]
                server.start()
                await asyncio.sleep(RETRY_INTERVAL + 0.5)  # past the store's retry time
                before, began = len(flushes), time.monotonic()
                await asyncio.sleep(2.0)
                return (len(flushes) - before) / (time.monotonic() - began)

            assert asyncio.run(scenario()) < 3  # one a RETRY_INTERVAL, not hundreds
            assert len(state._held) == 1  # still held, whole: nothing of it was sent
    finally:
        server.stop()


def test_a_store_refusing_the_handshake_is_down_not_reconnected_per_request(
        tmp_path: Path) -> None:
    # A restarted store that answers redis-py's handshake with an error (`CLIENT`
    # renamed) is unusable; not marked down, each admission made a new connection and
    # handshake (~170 a second at one request every 5 ms; found by review).
    server = RedisServer(tmp_path)
    try:
        with connected_state(server.url, TIMEOUT) as state:
            gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=50), LEASE))
            server.stop()
            server.options = ["--rename-command", "CLIENT", "CLIENTX"]
            server.start()

            async def one() -> None:
                with contextlib.suppress(StateUnavailable):
                    (await gate.admit_async()).release(0.0)

            async def scenario() -> float:
                began, asked = time.monotonic(), []
                while time.monotonic() - began < 2.0:
                    asked.append(asyncio.ensure_future(one()))
                    await asyncio.sleep(0.005)
                await asyncio.gather(*asked)
                return time.monotonic() - began

            seconds = asyncio.run(scenario())
            made = int(server.client().info("stats")["total_connections_received"])
            # One attempt a RETRY_INTERVAL (and this client's), not one a request (~400).
            assert made <= 2 * seconds / RETRY_INTERVAL + 3
            assert state._down_since is not None
    finally:
        server.stop()


def test_releases_a_blocking_admission_carried_are_held_and_sent_first_next_time(
        redis_server: RedisServer, state: RedisState) -> None:
    # An admission made off an event loop (`admit`, not `admit_async`) carries its
    # tenant's queued releases too; refused before anything was sent (the store marked
    # down), it dropped them: their slots stayed taken until the leases expired.
    tenant = Quota(concurrency=2, cpu_per_minute=CPU_PER_MINUTE)
    gate = state.gate(GateSpec("f", "acme", Quota(), tenant, LEASE))
    client = redis_server.client()
    first, second = gate.admit(), gate.admit()
    assert client.zcard(gate.keys.tenant_leases) == 2
    process = redis_server.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StateUnavailable):
            gate.admit()  # sent, never answered: the store is marked down
        assert state._down_since is not None

        async def scenario() -> None:
            first.release(0.25)  # queued on this loop, for the next admission to carry
            with pytest.raises(StateUnavailable):
                gate.admit()  # carries it; not sent: the store is down

        asyncio.run(scenario())
    finally:
        os.kill(process.pid, signal.SIGCONT)
    time.sleep(RETRY_INTERVAL + 0.2)
    # The next admission off a loop sends what was held first: the first run's slot is
    # free for it (nothing else would send it off a loop).
    third = gate.admit()
    assert client.zcard(gate.keys.tenant_leases) == 2  # the second run's and this one's
    # Off a loop again, releases are sent at once (the timer the loop above left was
    # taken for one still due, and every release waited for it: found by review).
    second.release()
    third.release()
    assert client.zcard(gate.keys.tenant_leases) == 0

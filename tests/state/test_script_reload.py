"""Scripts the store forgot (a restart, `SCRIPT FLUSH`) are loaded again and only the
calls that did not run are sent again, against a real redis-server: a call that ran
must never run twice (a refund given twice is admissions beyond the rate, a release
charged twice is CPU the tenant never used), and what cannot be sent is said."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.state import (
    GateSpec,
    LocalState,
    Quota,
    QuotaExceeded,
    StateSettings,
    StateUnavailable,
)
from stockade.state.keys import TenantKeys
from stockade.state.redisstate import RETRY_INTERVAL, RedisState
from stockade.state.scripts import ADMIT, bucket_field

from .conftest import RedisServer, SlowProxy
from .test_slow_store import SLACK

TIMEOUT = 0.5
SCRIPT_FLUSH = b"*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n"


@pytest.fixture
def forgetful_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` whose SCRIPT command is gone: every script call answers
    NOSCRIPT, whatever is loaded."""
    server = RedisServer(tmp_path, options=["--rename-command", "SCRIPT", ""])
    try:
        yield server
    finally:
        server.stop()


def test_a_script_flush_mid_pipeline_runs_no_call_twice(redis_server: RedisServer) -> None:
    # A flush landing while a long pipeline runs (it is read in chunks): the calls
    # before it ran, those after answered NOSCRIPT, and the whole pipeline was sent
    # again: refunds given back twice, beyond burst + rate x elapsed (found by review).
    # Here the flush is one of the pipeline's own commands, so it lands at a known
    # place.
    state = RedisState(StateSettings(redis_server.url, timeout=TIMEOUT), LocalState(),
                       env={})
    try:
        assert state.connect()
        gate = state.gate(GateSpec("f", "acme", Quota(rate=1, burst=1e6), Quota(), 10.0))
        client = redis_server.client()
        seconds, micros = client.time()
        ahead = seconds + micros / 1e6 + 500_000
        field = bucket_field(1.0, 1e6)
        client.hset(gate.keys.function_quota, field, repr(ahead))
        refunds = [gate.refund(1)] * 10
        replies = state._pipeline([*refunds, SCRIPT_FLUSH, *refunds])
    finally:
        state.close()
    assert [reply for reply in replies if reply != 1] in (["OK"], [b"OK"]), replies
    given_back = ahead - float(client.hget(gate.keys.function_quota, field) or 0)
    assert given_back == pytest.approx(20, abs=1e-3)


def test_releases_a_store_keeps_refusing_are_said_to_be_dropped(
        forgetful_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    # A store answering NOSCRIPT after its scripts were loaded again: what the releases
    # would have given back is lost, and nobody was told.
    state = RedisState(StateSettings(forgetful_server.url, timeout=TIMEOUT), LocalState(),
                       env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(concurrency=2), Quota(), 10.0))
        with pytest.raises(StateUnavailable):
            gate.admit()
        with caplog.at_level(logging.WARNING, logger="stockade.state"):
            gate.release("lost", 0.0)  # off a loop: flushed at once
    finally:
        state.close()
    dropped = [record.getMessage() for record in caplog.records
               if "dropped" in record.getMessage()]
    assert dropped and "1 release" in dropped[0] and "NOSCRIPT" in dropped[0], dropped


def test_a_slot_granted_before_a_resend_that_fails_goes_back(
        redis_server: RedisServer, slow_proxy: SlowProxy) -> None:
    # A flush landed ahead of a pipeline (a refund, then an admission) on a store
    # answering each exchange in 0.6 of the timeout: the admission's `ok` was read, the
    # refund answered NOSCRIPT, and the scripts' loads and the refund sent again ended
    # past the round trip's time. Every reply was dropped with it: the request got 503
    # while its slot stayed taken in the store for the lease's time (28 s of refusals
    # for a tenant of one slot, on every replica; found by review). The `ok` read is
    # acted on: its slot goes back once the store is tried again.
    timeout = 1.0
    state = RedisState(StateSettings(slow_proxy.url(), timeout=timeout), LocalState(),
                       env={})
    other = RedisState(StateSettings(redis_server.url, timeout=timeout), LocalState(),
                       env={})
    client = redis_server.client()
    spec = GateSpec("f", "acme", Quota(rate=100, burst=100), Quota(concurrency=1), 30.0)
    try:
        assert state.connect()
        gate = state.gate(spec)
        client.script_flush()
        client.script_load(ADMIT)  # the refund ahead of the admission answers NOSCRIPT
        state.queue_refund(gate, 1, flush=False)
        slow_proxy.delay = 0.6 * timeout

        async def scenario() -> None:
            with pytest.raises(StateUnavailable):
                await gate.admit_async()
            slow_proxy.delay = 0.0
            # Marked down by the resend; given back once it may be tried again, with
            # no other request here to carry it.
            await asyncio.sleep(RETRY_INTERVAL + 2 * SLACK)

        asyncio.run(scenario())
        leases = TenantKeys.of("acme", "f", "").tenant_leases
        assert client.zcard(leases) == 0, client.zrange(leases, 0, -1, withscores=True)
        try:
            other.gate(spec).admit().release()
        except QuotaExceeded as exc:
            pytest.fail(f"the slot is still held by the request refused 503: {exc}")
    finally:
        state.close()
        other.close()


def test_releases_refused_while_the_store_is_marked_down_are_sent_once_it_is_tried(
        redis_server: RedisServer, slow_proxy: SlowProxy) -> None:
    # A release queued, or carried by an admission, while the store is marked down was
    # dropped without being sent: its slot stayed taken for the lease's time though the
    # store answered again a second later. It waits for the next round trip instead.
    state = RedisState(StateSettings(slow_proxy.url(), timeout=TIMEOUT), LocalState(),
                       env={})
    client = redis_server.client()
    try:
        assert state.connect()
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=1), 30.0))

        async def scenario() -> None:
            lease = await gate.admit_async()
            slow_proxy.delay = 2 * TIMEOUT
            with pytest.raises(StateUnavailable):
                await gate.admit_async()  # no answer in time: marked down
            await asyncio.sleep(SLACK)
            slow_proxy.delay = 0.0
            lease.release()
            with pytest.raises(StateUnavailable):
                await gate.admit_async()  # refused at once, carrying the release
            await asyncio.sleep(RETRY_INTERVAL + 2 * SLACK)

        asyncio.run(scenario())
        leases = TenantKeys.of("acme", "f", "").tenant_leases
        assert client.zcard(leases) == 0, client.zrange(leases, 0, -1, withscores=True)
    finally:
        state.close()

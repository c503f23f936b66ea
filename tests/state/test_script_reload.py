"""Scripts the store forgot (a restart, `SCRIPT FLUSH`) are loaded again and only the
calls that did not run are sent again, against a real redis-server: a call that ran
must never run twice (a refund given twice is admissions beyond the rate, a release
charged twice is CPU the tenant never used), and what cannot be sent is said."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.state import GateSpec, LocalState, Quota, StateSettings, StateUnavailable
from stockade.state.redisstate import RedisState
from stockade.state.scripts import bucket_field

from .conftest import RedisServer

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

"""A store answering every round trip well within the `[state] timeout` is used: a fresh
connection made while an admission waits is kept and not counted as the store's time,
and releases waiting to be sent ride with the next admissions instead of a round trip
of their own ahead of them.

A connection whose handshake ended inside an admission's wait left its script what was
left of the timeout, so against a store answering each command in 0.28 of the timeout
the script timed out, the connection was dropped and the store marked down, a second
later again, for ever; and a flush of releases queued between two admissions made the
second wait for three round trips (the one in flight, the flush, its own), so a store
answering each in 0.36 of the timeout answered it too late.
The store here is a real `redis-server` behind a proxy delaying every reply byte.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stockade.state import (
    GateSpec,
    Lease,
    LocalState,
    Quota,
    QuotaExceeded,
    StateSettings,
    StateUnavailable,
    open_state,
)
from stockade.state.keys import TenantKeys
from stockade.state.redisstate import RETRY_INTERVAL, RedisState

from .conftest import RedisServer
from .test_slow_store import SLACK, SlowProxy, _answered, _spec


class DelayLine(SlowProxy):
    """`SlowProxy` whose replies reach the client `delay` seconds after they left the
    server, each byte (a latency: a reply in several chunks is not held once per
    chunk, nor one chunk behind another's hold)."""

    def _pipe(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        if not held:
            super()._pipe(source, sink, held)
            return
        line: queue.Queue[tuple[float, bytes] | None] = queue.Queue()

        def deliver() -> None:
            while (item := line.get()) is not None:
                at, data = item
                time.sleep(max(0.0, at - time.monotonic()))
                try:
                    sink.sendall(data)
                except OSError:
                    return
            try:
                sink.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        threading.Thread(target=deliver, daemon=True).start()
        try:
            while data := source.recv(65536):
                line.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        finally:
            line.put(None)


@pytest.fixture
def delay_line(redis_server: RedisServer) -> Iterator[DelayLine]:
    proxy = DelayLine(redis_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


def _state(url: str, timeout: float) -> RedisState:
    return RedisState(StateSettings(url, "fail_closed", timeout), LocalState(), env={})


def test_a_fresh_connection_made_during_an_admissions_wait_is_kept_and_used(
        redis_server: RedisServer, delay_line: DelayLine) -> None:
    """Each command answered in 0.28 of the timeout: a fresh connection's handshake
    (CLIENT SETNAME, CLIENT SETINFO twice) ends 0.84 of the timeout into the first
    admission's wait. Its script then had 0.16 left: it timed out, the connection was
    dropped and the store marked down, and so on every retry (0 of 5 admitted, a
    connection each). The script gets the whole timeout from when it is sent: the
    first admission may still give up at its own deadline, the ones after are
    admitted on the same connection, and the first's late grant goes back."""
    timeout = 0.5
    warm = _state(redis_server.url, timeout)
    try:
        warm.gate(_spec("warm", concurrency=5)).admit().release()  # scripts loaded
    finally:
        warm.close()
    delay_line.delay = 0.28 * timeout
    state = _state(delay_line.url(), timeout)
    gate = state.gate(_spec(concurrency=50))
    answers: list[tuple[str, float]] = []

    async def scenario() -> None:
        for _ in range(5):
            answers.append(await _answered(gate))
            await asyncio.sleep(RETRY_INTERVAL + 0.05)

    try:
        asyncio.run(scenario())
        down = state._down_since is not None
        held = redis_server.client().zcard(gate.keys.function_leases)
    finally:
        state.close()
    assert all(took < timeout + SLACK for _, took in answers), answers
    assert [kind for kind, _ in answers[1:]] == ["admitted"] * 4, answers
    assert not down, "a store answering within the timeout was marked down"
    assert delay_line.connections == 1, delay_line.connections  # kept, not remade
    assert held == 0, "the grant of an admission that gave up stayed taken"


def test_a_release_queued_between_two_admissions_rides_with_the_second(
        redis_server: RedisServer, delay_line: DelayLine) -> None:
    """A's admission in flight, a release of another tenant queued 10 ms later, C's
    admission 10 ms after that, each round trip 0.36 of the timeout: the release's
    flush ran on its own between them, C waited for three round trips and got 503
    at its deadline. The release rides with C's admission: two round trips."""
    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    a, c = (state.gate(_spec(name, concurrency=5)) for name in ("a", "c"))
    other = state.gate(GateSpec("o", "other", Quota(concurrency=5), Quota(), 30.0, None))

    async def scenario() -> list[tuple[str, float]]:
        lease = await other.admit_async()
        for gate in (a, c):  # connected, scripts loaded
            (await gate.admit_async()).release()
        await asyncio.sleep(0.2)  # the releases sent
        delay_line.delay = 0.36 * timeout
        first = asyncio.create_task(_answered(a))
        await asyncio.sleep(0.01)
        lease.release()  # no admission of its tenant to carry it
        await asyncio.sleep(0.01)
        second = asyncio.create_task(_answered(c))
        answers = list(await asyncio.gather(first, second))
        delay_line.delay = 0.0
        await asyncio.sleep(0.2)
        return answers

    try:
        answers = asyncio.run(scenario())
        held = redis_server.client().zcard(other.keys.function_leases)
    finally:
        state.close()
    assert [kind for kind, _ in answers] == ["admitted", "admitted"], answers
    assert all(took < timeout + SLACK for _, took in answers), answers
    assert held == 0, "the release was not sent"


def _steady_load(delay_line: DelayLine, functions: int,
                 quota: Quota) -> tuple[dict[str, int], list[float], bool]:
    """A request every 3 ms for 2.5 s, round robin over `functions` gates of one tenant
    with `quota` each, and a lease of another tenant given back every 5 ms, against a
    store answering each round trip in 0.36 of the timeout (1 s): the count of each
    answer, how long each admission took, and whether the store was marked down."""
    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    gates = [state.gate(GateSpec(f"s{n}", "acme", quota, Quota(), 30.0, None))
             for n in range(functions)]
    other = state.gate(GateSpec("o", "other", Quota(concurrency=1000), Quota(), 30.0, None))
    leases = [other.admit() for _ in range(600)]
    answers = {"admitted": 0, "unavailable": 0}
    took: list[float] = []

    async def one(gate: Any) -> None:
        began = time.monotonic()
        try:
            lease = await gate.admit_async()
        except StateUnavailable:
            answers["unavailable"] += 1
            return
        answers["admitted"] += 1
        took.append(time.monotonic() - began)
        await asyncio.sleep(0.01)
        lease.release()

    async def give_back() -> None:
        for lease in leases:
            lease.release()
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        (await gates[0].admit_async()).release()  # scripts loaded
        await asyncio.sleep(0.1)
        delay_line.delay = 0.36 * timeout
        releasing = asyncio.create_task(give_back())
        asked: list[asyncio.Task[None]] = []
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            asked.append(asyncio.create_task(one(gates[len(asked) % len(gates)])))
            await asyncio.sleep(0.003)
        await asyncio.gather(releasing, *asked)

    try:
        asyncio.run(scenario())
        down = state._down_since is not None
    finally:
        state.close()
    return answers, took, down


def test_steady_admissions_among_releases_are_answered_within_the_timeout(
        delay_line: DelayLine) -> None:
    """A request every 3 ms, each on a gate of its own (none waits for another's grant),
    a lease of another tenant given back every 5 ms (no admission of its tenant to
    carry it), a store answering each round trip in 0.36 of the timeout: flushes of the
    releases took turns with the admissions on the state thread, so an admission waited
    for three round trips and got 503. Releases ride with the admissions: an admission
    waits for two round trips at most, and none gets 503."""
    answers, took, down = _steady_load(delay_line, 1000, Quota(concurrency=5))
    total = answers["admitted"] + answers["unavailable"]
    # None expected; a few allowed for a loaded machine (it was most of them).
    assert answers["unavailable"] <= total // 20, answers
    assert max(took) < 1.0 + SLACK, max(took)
    assert not down


@pytest.mark.parametrize(("functions", "quota"), [
    (200, Quota(concurrency=5)), (1, Quota(concurrency=1000))],
    ids=["each-gate-every-0.6s", "one-busy-gate"])
def test_steady_admissions_waiting_for_a_grant_are_answered_within_the_timeout(
        delay_line: DelayLine, functions: int, quota: Quota) -> None:
    """The steady load above on gates asked again while their last grant is on its way:
    a request waited for that grant, which had no share for it (sized before it came,
    or taken by requests that came after it), then for each grant after, up to three,
    each behind the round trip the state thread had started meanwhile: 0-20 % of the
    admissions (200 gates) and 62-95 % (one gate) got 503. A request waits only for a
    grant that counts it, takes its share as the grant comes, and otherwise asks in
    the next pipeline: one round trip more at most."""
    answers, took, down = _steady_load(delay_line, functions, quota)
    total = answers["admitted"] + answers["unavailable"]
    assert answers["unavailable"] <= total // 20, answers
    assert max(took) < 1.0 + SLACK, max(took)
    assert not down


def test_a_request_whose_gates_grant_has_no_share_for_it_asks_in_the_next_pipeline(
        delay_line: DelayLine) -> None:
    """A's grant of one on its way (the gate was idle), another gate's admission queued
    behind it, then B on A's gate, each round trip 0.4 of the timeout: B waited for A's
    grant, found nothing for it, and asked behind the round trip the state thread had
    started meanwhile (the other gate's): three round trips, 503 at its deadline. A
    grant that cannot count B is not waited for: B asks with the other gate's
    admission, and is answered after two round trips."""
    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    a, other = (state.gate(_spec(name, concurrency=50)) for name in ("a", "other"))

    async def scenario() -> list[tuple[str, float]]:
        for gate in (a, other):  # connected, scripts loaded
            (await gate.admit_async()).release()
        await asyncio.sleep(0.2)  # the releases sent, the gates idle
        delay_line.delay = 0.4 * timeout
        first = asyncio.create_task(_answered(a))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(_answered(other))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(_answered(a))
        return list(await asyncio.gather(first, queued, second))

    try:
        answers = asyncio.run(scenario())
    finally:
        state.close()
    assert [kind for kind, _ in answers] == ["admitted"] * 3, answers
    assert answers[2][1] < 2 * 0.4 * timeout + SLACK, answers


def _broken_then_slow(gate: Any, store: Any, delay_line: DelayLine, timeout: float) -> None:
    """Connect `gate` (its scripts loaded), break its connection, then have the store
    answer each command in 0.25 of `timeout` and hold scripts for 1.3 s (writes paused,
    the handshake not): the next admission waits for a fresh connection, then longer."""
    gate.admit().release()  # connected, scripts loaded
    store.client_kill_filter(_type="normal", skipme=True)  # the connection breaks
    time.sleep(0.1)
    delay_line.delay = 0.25 * timeout
    store.client_pause(1300, all=False)  # writes (scripts) wait, the handshake not


def test_an_admission_waiting_for_a_fresh_connection_keeps_its_timeout_off_a_loop(
        redis_server: RedisServer, delay_line: DelayLine) -> None:
    """The connection broken, an admission off an event loop waited for a fresh one (its
    handshake three commands, each answered in 0.25 of the timeout), then gave its
    script a whole timeout of its own from when it was sent: a store taking 0.8 of the
    timeout to answer it (writes paused) answered the admission after 1.55 timeouts. It
    is answered within its timeout; the store, which answered within its own, is not
    marked down, the fresh connection is kept, and what it granted late goes back."""
    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    gate = state.gate(_spec(concurrency=1))
    store = redis_server.client()
    try:
        _broken_then_slow(gate, store, delay_line, timeout)
        began = time.monotonic()
        try:
            late: Lease | None = gate.admit()
        except StateUnavailable:
            late = None
        took = time.monotonic() - began
        if late is not None:
            late.release()
        time.sleep(1.2)  # answered at 1.55 s, its grant given back by 1.8 s
        delay_line.delay = 0.0
        marked_down = state._retry_at > began
        held = store.zcard(gate.keys.function_leases)
        gate.admit().release()  # a slot of one: refused while the late grant held it
    finally:
        state.close()
    assert took < timeout + 0.1, took
    assert late is None, "answered after its timeout"
    assert not marked_down, "a store answering within its timeout was marked down"
    assert held == 0, "the grant answered after the admission gave up stayed taken"
    assert delay_line.connections == 2, delay_line.connections  # kept, not made again


def test_a_late_answer_no_thread_can_read_is_never_the_next_admissions(
        redis_server: RedisServer, delay_line: DelayLine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no thread to read a late answer (the process out of threads), the connection
    went back to its pool still owing it: the next admission read it as its own grant,
    under the other's lease id, which no release ever freed."""
    start = threading.Thread.start

    def no_late_reader(thread: threading.Thread) -> None:
        if thread.name == "stockade-state-late":
            raise RuntimeError("can't start new thread")
        start(thread)

    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    gate = state.gate(_spec(concurrency=1))
    store = redis_server.client()
    try:
        _broken_then_slow(gate, store, delay_line, timeout)
        monkeypatch.setattr(threading.Thread, "start", no_late_reader)
        with pytest.raises((StateUnavailable, RuntimeError)):
            gate.admit()
        monkeypatch.setattr(threading.Thread, "start", start)
        time.sleep(1.4)  # the store answers the abandoned script meanwhile
        delay_line.delay = 0.0
        for _ in range(3):
            gate.admit().release()
        state.flush()
        time.sleep(0.2)
        held = store.zcard(gate.keys.function_leases)
    finally:
        state.close()
    # The abandoned grant's lease expires on its own (nobody read it); none other is
    # held: each admission read its own answer and released its own lease.
    assert held <= 1, held
    assert len({m for m in store.zrange(gate.keys.function_leases, 0, -1)}) <= 1


def _outcome(gate: Any, leases: list[Lease]) -> Any:
    """`gate`'s admission on the running loop: "admitted" (the lease kept in `leases`),
    "refused" or "unavailable", and how long it took."""

    async def asked() -> tuple[str, float]:
        began = time.monotonic()
        try:
            leases.append(await gate.admit_async())
        except QuotaExceeded:
            return "refused", time.monotonic() - began
        except StateUnavailable:
            return "unavailable", time.monotonic() - began
        return "admitted", time.monotonic() - began

    return asyncio.create_task(asked())


def _scripts_run(server: RedisServer) -> int:
    stats: Any = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.parametrize("queued", [False, True], ids=["sent-at-once", "behind-another"])
def test_requests_waiting_for_a_grant_cut_short_get_a_slot_or_a_refusal_from_it(
        redis_server: RedisServer, delay_line: DelayLine, queued: bool) -> None:
    """Three requests at once on a gate of four slots, two of them held by another
    replica: the grant counting the three was halved to one slot (half of what was
    free), so the two waiting for it asked again, a round trip more each (two, behind
    one in flight). The grant gives those waiting for it what is free and refuses the
    rest in the same answer: two admitted, one refused, by one script; so when they
    join a grant already built and queued behind another round trip."""
    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    near = _state(redis_server.url, timeout)
    gate, other = state.gate(_spec(concurrency=4)), state.gate(_spec("o", concurrency=5))
    held = [near.gate(_spec(concurrency=4)).admit() for _ in range(2)]
    leases: list[Lease] = []

    async def scenario() -> tuple[list[tuple[str, float]], int]:
        for each in (gate, other):  # connected, scripts loaded
            (await each.admit_async()).release()
        await asyncio.sleep(0.2)  # the releases sent
        delay_line.delay = 0.3 * timeout
        before = _scripts_run(redis_server)
        busy = _outcome(other, leases) if queued else None
        await asyncio.sleep(0.05 if queued else 0.0)
        first = _outcome(gate, leases)
        await asyncio.sleep(0.05 if queued else 0.0)  # its call built, queued
        answers = list(await asyncio.gather(first, _outcome(gate, leases),
                                            _outcome(gate, leases)))
        if busy is not None:
            await busy
        return answers, _scripts_run(redis_server) - before

    try:
        answers, scripts = asyncio.run(scenario())
    finally:
        for lease in leases + held:
            lease.release()
        state.close()
        near.close()
    assert sorted(kind for kind, _ in answers) == ["admitted", "admitted", "refused"], answers
    assert scripts == (2 if queued else 1), f"{scripts} scripts: those waiting asked again"
    rounds = 2 if queued else 1  # the one in flight first
    assert all(took < (rounds + 0.5) * 0.3 * timeout for _, took in answers), answers


def _near_limit_load(delay_line: DelayLine, policy: str,
                     limit: int = 20) -> tuple[dict[str, int], int, float]:
    """A request every 3 ms for 2.5 s on one gate of `limit` slots, each holding its
    lease 0.2 s, against a store answering each round trip in 0.3 of the timeout (1 s),
    under `policy`: the count of each answer ("degraded": admitted by the local
    fallback), the most leases held here at once, and the longest admission."""
    timeout = 1.0
    state = RedisState(StateSettings(delay_line.url(), policy, timeout),
                       LocalState(degraded=True), env={})
    gate = state.gate(_spec(concurrency=limit))
    answers = {"admitted": 0, "degraded": 0, "refused": 0, "unavailable": 0}
    held, peak, took = 0, 0, 0.0

    async def one() -> None:
        nonlocal held, peak, took
        began = time.monotonic()
        try:
            lease = await gate.admit_async()
        except QuotaExceeded:
            answers["refused"] += 1
            return
        except StateUnavailable:
            answers["unavailable"] += 1
            return
        finally:
            took = max(took, time.monotonic() - began)
        answers["degraded" if lease.degraded else "admitted"] += 1
        held += 1
        peak = max(peak, held)
        await asyncio.sleep(0.2)
        held -= 1
        lease.release()

    async def scenario() -> None:
        (await gate.admit_async()).release()  # connected, scripts loaded
        await asyncio.sleep(0.1)
        delay_line.delay = 0.3 * timeout
        asked: list[asyncio.Task[None]] = []
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            asked.append(asyncio.create_task(one()))
            await asyncio.sleep(0.003)
        await asyncio.gather(*asked)

    try:
        asyncio.run(scenario())
    finally:
        state.close()
    return answers, peak, took


def test_admissions_near_a_concurrency_limit_are_decided_by_the_store(
        delay_line: DelayLine) -> None:
    """Near a concurrency limit grants are cut to half of what is free: those waiting
    for one asked again, behind the round trip in flight, three or four round trips in
    all, and 8-11 % of the admissions got 503 from a store answering each in 0.3 of the
    timeout. Each is admitted or refused by the grant it waits for."""
    answers, _, took = _near_limit_load(delay_line, "fail_closed")
    total = sum(answers.values())
    assert answers["unavailable"] <= total // 100, answers
    assert answers["admitted"] and answers["refused"], answers
    assert took < 1.0, took


def test_fail_open_admits_no_more_than_the_limit_while_the_store_answers(
        delay_line: DelayLine) -> None:
    """The same load under `fail_open`: the requests a cut-short grant sent to ask again
    ran out of time and were admitted by the local fallback, which knows nothing of the
    slots the store leased: 39 leases held at once against a limit of 20. The store
    answers every round trip within its timeout: it decides every admission."""
    answers, peak, _ = _near_limit_load(delay_line, "fail_open")
    assert answers["degraded"] == 0 and peak <= 20, (answers, peak)
    assert answers["admitted"], answers


@pytest.mark.parametrize("call", ["violation", "counted", "probe-unused", "ping"])
def test_a_breaker_call_waiting_for_a_fresh_connection_keeps_its_timeout(
        redis_server: RedisServer, delay_line: DelayLine, call: str) -> None:
    """The connection broken, a breaker's record (or a probe's, or a ping) waited for a
    fresh one, then had a whole timeout of its own from when it was sent: 1.3-1.55
    timeouts for a store answering in its time. Each is answered within the caller's
    timeout, as an admission is; the store is not marked down, the fresh connection is
    kept, and a violation answered late is counted all the same."""
    from stockade.telemetry.breaker import BreakerConfig

    timeout = 1.0
    state = _state(delay_line.url(), timeout)
    breakers = state.breakers(BreakerConfig(threshold=100, window=60, cooldown=30), None)
    gate = state.gate(_spec(concurrency=1))
    store = redis_server.client()
    for script in (state.violation_script, state.counted_script, state.unused_script):
        store.script_load(script.script)  # as once used: the first answer is no NOSCRIPT
    try:
        if call == "ping":  # not paused: a handshake and a ping of 0.32 timeouts each
            gate.admit().release()
            store.client_kill_filter(_type="normal", skipme=True)
            time.sleep(0.1)
            delay_line.delay = 0.32 * timeout
        else:
            _broken_then_slow(gate, store, delay_line, timeout)
        began = time.monotonic()
        if call == "violation":
            breakers.record("function:f", "acme", True, source="10.0.0.1")
        elif call == "counted":
            breakers.counted("function:f", "acme", "10.0.0.1")
        elif call == "probe-unused":
            with state._lock:
                state._probes.grant(("function:f", "acme"), "1.0")
            breakers.probe_unused("function:f", "acme")
        else:
            state.ping()
        took = time.monotonic() - began
        time.sleep(1.0)  # the store answers meanwhile
        delay_line.delay = 0.0
        marked_down = state._retry_at > began
        violations = store.zcard(gate.keys.violations.replace(":v:-", ":v:function:f"))
    finally:
        state.close()
    assert took < timeout + 0.1, took
    assert not marked_down, "a store answering within its timeout was marked down"
    assert delay_line.connections == 2, delay_line.connections  # kept, not made again
    if call == "violation":
        assert violations == 1, "the violation answered late was not counted"


def test_a_fresh_replica_under_fail_open_is_decided_by_the_store_from_its_first_request(
        delay_line: DelayLine) -> None:
    """A replica just started, every command answered in 0.08 s, a timeout of 0.3 s:
    the connection's handshake (three commands) and the scripts' load took the first
    requests' whole time, and under `fail_open` the local fallback admitted them though
    the store never failed (31-35 in flight against a concurrency of 20). The state
    the gateway opens is connected, its scripts loaded, before it serves: the store
    decides every request."""
    delay_line.delay = 0.08
    counted: list[str] = []
    state = open_state(StateSettings(delay_line.url(), "fail_open", 0.3),
                       on_fallback=counted.append)
    gate = state.gate(_spec(concurrency=20))
    leases: list[Lease] = []

    async def scenario() -> list[tuple[str, float]]:
        answers = [_outcome(gate, leases) for _ in range(40)]
        return list(await asyncio.gather(*answers))

    try:
        answers = asyncio.run(scenario())
        degraded = sum(lease.degraded for lease in leases)
    finally:
        for lease in leases:
            lease.release()
        state.close()
    kinds = sorted(kind for kind, _ in answers)
    assert degraded == 0 and counted == [], (degraded, counted)
    assert kinds == ["admitted"] * 20 + ["refused"] * 20, kinds


@pytest.mark.parametrize("store", ["refused", "silent"])
def test_a_replica_started_while_the_store_is_down_fails_open_at_once(store: str) -> None:
    """Connecting before serving keeps `fail_open`'s meaning: a store down when the
    replica starts (nothing listening, or a peer that never answers) is found down
    within a timeout, and the first request is decided here alone without waiting."""
    timeout = 0.3
    with socket.socket() as peer:
        peer.bind(("127.0.0.1", 0))
        if store == "silent":
            peer.listen(16)
        url = f"redis://127.0.0.1:{peer.getsockname()[1]}/0"
        counted: list[str] = []
        began = time.monotonic()
        state = open_state(StateSettings(url, "fail_open", timeout),
                           on_fallback=counted.append)
        opened = time.monotonic() - began
        try:
            began = time.monotonic()
            lease = state.gate(_spec(concurrency=1)).admit()
            took = time.monotonic() - began
            lease.release()
        finally:
            state.close()
    assert opened < timeout + SLACK, opened
    assert lease.degraded and counted == ["fail_open"], counted
    assert took < 0.05, took


def test_a_violation_recorded_while_a_fresh_connection_is_made_is_not_lost(
        delay_line: DelayLine) -> None:
    """Three clients' violations, threshold 3, through a connection still being made
    (every command answered in 0.1 s, a timeout of 0.3 s: the handshake alone takes
    the first record's time): the first was given up at its deadline and never sent,
    two were counted and the breaker stayed closed. It is sent once the connection is
    ready, and what it changed is told."""
    from stockade.telemetry.breaker import BreakerConfig, Transition

    delay_line.delay = 0.1
    state = _state(delay_line.url(), 0.3)
    told: list[Transition] = []
    breakers = state.breakers(BreakerConfig(threshold=3, window=60, cooldown=30),
                              told.append)
    keys = TenantKeys.of("acme", "-", "function:f")
    try:
        for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            breakers.record("function:f", "acme", True, source=client)
        deadline = time.monotonic() + 3.0
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        store = redis.Redis(port=delay_line.target, decode_responses=True)
        counted = store.zcard(keys.violations)
        opened = store.hget(keys.breaker, "state")
    finally:
        state.close()
    assert counted == 3, f"{counted} of 3 violations counted"
    assert opened == "open" and [t.new for t in told] == ["open"], (opened, told)

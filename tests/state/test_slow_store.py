"""A real Redis that answers slowly, or whose name does not resolve, costs an admission
at most its `[state] timeout`, counted from the moment it was asked, and a slow store is
still used once a connection to it is made.

Found by review: a connection's handshake (AUTH, CLIENT SETNAME, CLIENT SETINFO twice,
SELECT) shared the admission's one deadline, so a store answering each command after a
quarter of the timeout never admitted anyone; an admission queued on the state thread
behind others, or waiting for another request's grant, was answered several timeouts
after it was asked; and a resolver that did not answer held an admission as long as it
liked. Each admission gives up at its own deadline, not an earlier one's that it
was sent with; time queued is not the store's (it is not marked down for it); what it
carries (releases, refunds) is sent all the same, and what the store grants it later
goes back. The store here is a real `redis-server` behind a proxy that holds
each reply.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.state import (
    GateSpec,
    Lease,
    LocalState,
    Quota,
    QuotaExceeded,
    StateSettings,
    StateUnavailable,
)
from stockade.state.breakers import SharedBreakers
from stockade.state.redisstate import RETRY_INTERVAL, RedisState
from stockade.state.scripts import bucket_field

from .conftest import RedisServer, SlowProxy

TIMEOUT = 0.5
SLACK = 0.3  # scheduling on a busy machine; far below any delay that is being tested
PASSWORD = "slow-store-secret"


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` asking for a password: its handshake has AUTH too."""
    server = RedisServer(tmp_path, PASSWORD)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_proxy(secured_server: RedisServer) -> Iterator[SlowProxy]:
    proxy = SlowProxy(secured_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


def _state(url: str, policy: str = "fail_closed", timeout: float = TIMEOUT) -> RedisState:
    return RedisState(StateSettings(url, policy, timeout), LocalState(),
                      env={"STOCKADE_REDIS_PASSWORD": PASSWORD})


def _spec(function: str = "f", **quota: float) -> GateSpec:
    return GateSpec(function, "acme", Quota(**quota), Quota(), 30.0,  # type: ignore[arg-type]
                    None)


def _admit(gate: Any, path: str) -> Lease:
    if path == "sync":
        lease: Lease = gate.admit()
        return lease

    async def admitted() -> Lease:
        lease: Lease = await gate.admit_async()
        return lease

    return asyncio.run(admitted())


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_store_slow_to_answer_each_command_is_used_once_connected(
        slow_proxy: SlowProxy, path: str) -> None:
    """Every command answered after 0.3 of the timeout: the handshake of a connection
    (AUTH, CLIENT SETNAME, CLIENT SETINFO x2, SELECT: 1.5 timeouts) is finished off the
    admission's path and the connection kept, so admissions come through within a few
    tries, each of them within its timeout; it was every admission a 503, for ever."""
    slow_proxy.delay = 0.3 * TIMEOUT
    state = _state(slow_proxy.url(1))
    try:
        gate = state.gate(_spec(concurrency=5))
        lease = None
        for _ in range(6):
            began = time.monotonic()
            try:
                lease = _admit(gate, path)
            except StateUnavailable:
                pass
            took = time.monotonic() - began
            assert took < TIMEOUT + SLACK, took
            if lease is not None:
                break
            time.sleep(RETRY_INTERVAL)
        assert lease is not None and not lease.degraded, "a slow store never admitted"
        lease.release()
        for _ in range(3):  # and from then on, one command each: within the timeout
            began = time.monotonic()
            _admit(gate, path).release()
            assert time.monotonic() - began < TIMEOUT + SLACK
        assert slow_proxy.connections <= 3, slow_proxy.connections  # kept, not remade
    finally:
        state.close()


def test_time_queued_on_the_state_thread_counts_against_the_timeout(
        slow_proxy: SlowProxy) -> None:
    """Five gates asked one after another, each in its own turn of the loop, of a store
    answering after half the timeout: their round trips queued on the state thread one
    behind the other and the last was answered after five of them (1.2 s with a
    timeout of 0.5 s). Each is answered within the timeout from when it asked."""
    state = _state(slow_proxy.url())
    gates = [state.gate(_spec(f"f{n}", concurrency=5)) for n in range(5)]
    answers: list[tuple[str, float]] = []

    async def ask(gate: Any) -> None:
        began = time.monotonic()
        try:
            (await gate.admit_async()).release()
            answers.append(("admitted", time.monotonic() - began))
        except StateUnavailable:
            answers.append(("unavailable", time.monotonic() - began))

    async def scenario() -> None:
        for gate in gates:  # connected, scripts loaded: only the delay counts below
            (await gate.admit_async()).release()
        await asyncio.sleep(0.1)  # the releases sent
        slow_proxy.delay = 0.5 * TIMEOUT
        asked = []
        for gate in gates:
            asked.append(asyncio.create_task(ask(gate)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*asked)

    try:
        asyncio.run(scenario())
    finally:
        state.close()
    assert len(answers) == 5
    assert all(took < TIMEOUT + SLACK for _, took in answers), answers
    assert answers[0][0] == "admitted", answers  # the first had the store to itself


def test_time_waiting_for_another_requests_grant_counts_against_the_timeout(
        slow_proxy: SlowProxy) -> None:
    """A request that waited for the grant another request of its gate had asked for,
    then asked alone (the grant had no slot for it), was answered after two round trips
    (1.5 s with a timeout of 1 s). Its wait counts: it is answered within its timeout."""
    timeout = 1.0
    state = _state(slow_proxy.url(), timeout=timeout)
    gate = state.gate(_spec(concurrency=1))
    answers: list[tuple[str, float]] = []

    async def ask() -> Lease | None:
        began = time.monotonic()
        try:
            lease: Lease = await gate.admit_async()
        except (StateUnavailable, QuotaExceeded) as exc:
            answers.append((type(exc).__name__, time.monotonic() - began))
            return None
        answers.append(("admitted", time.monotonic() - began))
        return lease

    async def scenario() -> None:
        (await gate.admit_async()).release()  # connected, scripts loaded
        await asyncio.sleep(0.1)
        slow_proxy.delay = 0.75 * timeout
        first = asyncio.create_task(ask())
        await asyncio.sleep(0.02)
        second = asyncio.create_task(ask())
        for lease in await asyncio.gather(first, second):
            if lease is not None:
                lease.release()

    try:
        asyncio.run(scenario())
    finally:
        state.close()
    assert len(answers) == 2 and answers[0][0] == "admitted", answers
    assert all(took < timeout + SLACK for _, took in answers), answers


async def _answered(gate: Any) -> tuple[str, float]:
    """`gate`'s admission: "admitted" (released at once) or "unavailable", and how long
    it took."""
    began = time.monotonic()
    try:
        (await gate.admit_async()).release()
    except StateUnavailable:
        return "unavailable", time.monotonic() - began
    return "admitted", time.monotonic() - began


def test_a_store_answering_within_the_timeout_is_not_taken_for_down_by_queueing(
        secured_server: RedisServer, slow_proxy: SlowProxy) -> None:
    """Two requests on two gates 20 ms apart every 0.94 s, and a store answering each
    round trip in 0.6 of the timeout: the second waits for the first's round trip, so
    it cannot be answered within its timeout, and gets `on_unavailable` at its own
    deadline. That deadline passing while it waited marked the store down (every
    admission for `RETRY_INTERVAL` then got 503 without asking) and dropped the
    connection (the next paid a handshake): most requests got 503. The store is never
    marked down for it, the connection is kept, and what the store granted the second,
    answered late, goes back in the flush after (not one more round trip, which kept
    the state thread busy when the next pair came)."""
    state = _state(slow_proxy.url())
    gates = [state.gate(_spec(f"f{n}", concurrency=5)) for n in range(2)]
    rounds: list[tuple[tuple[str, float], ...]] = []

    async def scenario() -> None:
        for gate in gates:  # connected, scripts loaded: only the delay counts below
            (await gate.admit_async()).release()
        await asyncio.sleep(0.1)
        slow_proxy.delay = 0.6 * TIMEOUT
        for _ in range(4):  # round trips: the first, the second, their give-backs
            first = asyncio.create_task(_answered(gates[0]))
            await asyncio.sleep(0.02)
            second = asyncio.create_task(_answered(gates[1]))
            rounds.append(tuple(await asyncio.gather(first, second)))
            await asyncio.sleep(0.42)  # less than RETRY_INTERVAL: no retry in between
        slow_proxy.delay = 0.0

    try:
        asyncio.run(scenario())
        held = secured_server.client().zcard(gates[1].keys.function_leases)
    finally:
        state.close()
    assert all(took < TIMEOUT + SLACK for answers in rounds for _, took in answers), rounds
    assert [first for (first, _), _ in rounds] == ["admitted"] * 4, rounds
    assert held == 0, "what the store granted a request that gave up stayed taken"
    assert slow_proxy.connections == 1, slow_proxy.connections


def test_an_admission_joining_a_queued_pipeline_keeps_its_own_deadline(
        slow_proxy: SlowProxy) -> None:
    """Admissions asked while the state thread is busy go in one pipeline, which took
    the deadline of the earliest of them: one asked just before that deadline got 503
    at once, though the store answered it well within its own timeout. Each gives up at
    its own deadline, and no earlier."""
    timeout = 1.0
    state = _state(slow_proxy.url(), timeout=timeout)
    gates = [state.gate(_spec(f"f{n}", concurrency=5)) for n in range(3)]

    async def scenario() -> list[tuple[str, float]]:
        for gate in gates:
            (await gate.admit_async()).release()
        await asyncio.sleep(0.1)
        slow_proxy.delay = 0.6 * timeout
        first = asyncio.create_task(_answered(gates[0]))  # the thread's, for 0.6 s
        await asyncio.sleep(0.04)
        second = asyncio.create_task(_answered(gates[1]))  # sent at 0.6, answered at 1.2
        await asyncio.sleep(0.46)
        third = asyncio.create_task(_answered(gates[2]))  # with the second: 0.7 s
        return list(await asyncio.gather(first, second, third))

    try:
        answers = asyncio.run(scenario())
    finally:
        state.close()
    assert all(took < timeout + SLACK for _, took in answers), answers
    assert answers[0][0] == "admitted" and answers[2][0] == "admitted", answers
    assert answers[1][0] == "unavailable" and answers[1][1] >= timeout - 0.05, answers


def test_releases_carried_by_an_admission_that_gave_up_in_the_queue_are_sent(
        secured_server: RedisServer, slow_proxy: SlowProxy) -> None:
    """A lease given back rides with the next admission of its tenant; that admission,
    queued behind two slow round trips, gave up before it was sent, and the release
    was lost with it: a gate of one slot refused everyone until the lease expired (30 s
    here). The release is sent when the state thread comes to it."""
    state = _state(slow_proxy.url())
    gate = state.gate(_spec("g", concurrency=1))
    others = [state.gate(GateSpec("o", tenant, Quota(concurrency=5), Quota(), 30.0, None))
              for tenant in ("other1", "other2")]

    async def scenario() -> tuple[str, float]:
        held = [await other.admit_async() for other in others]
        lease = await gate.admit_async()
        await asyncio.sleep(0.1)
        slow_proxy.delay = 0.8 * TIMEOUT
        held[0].release()  # sent alone, 0.4 s on the state thread
        await asyncio.sleep(0.01)
        held[1].release()  # then this one, another 0.4 s
        await asyncio.sleep(0.01)
        lease.release()  # rides with the admission below, queued behind both
        answer = await _answered(gate)
        await asyncio.sleep(0.8)  # the queue drained
        slow_proxy.delay = 0.0
        return answer

    try:
        answer = asyncio.run(scenario())
        held = secured_server.client().zcard(gate.keys.function_leases)
        again = state.gate(_spec("g", concurrency=1))
        lease = again.admit()  # raises QuotaExceeded while the lost lease holds the slot
        lease.release()
    finally:
        state.close()
    assert answer[0] == "unavailable" and answer[1] < TIMEOUT + SLACK, answer
    assert held == 0


def test_a_refund_carried_by_an_admission_that_gave_up_in_the_queue_is_sent(
        secured_server: RedisServer, slow_proxy: SlowProxy) -> None:
    """A busy gate's credit ran out: its unspent admissions ride with the gate's next
    admission. That admission, queued behind two slow round trips, gave up before it
    was sent, and the refund was lost with it: the tenant's rate stayed spent. It is
    sent when the state thread comes to it."""
    from stockade.state.credit import HOLD

    state = _state(slow_proxy.url())
    # One admission a second, a burst of 100: a grant of twelve moves its time 12 s.
    gate = state.gate(_spec("g", rate=1, burst=100))
    others = [state.gate(GateSpec("o", tenant, Quota(concurrency=5), Quota(), 30.0, None))
              for tenant in ("other1", "other2")]

    async def scenario() -> tuple[str, float]:
        held = [await other.admit_async() for other in others]
        await asyncio.sleep(0.1)
        for lease in await asyncio.gather(*(gate.admit_async() for _ in range(6))):
            lease.release()  # six spent of a grant of twelve; its credit lasts HOLD
        assert gate._credit is not None, "no credit: nothing to refund"
        slow_proxy.delay = 0.8 * TIMEOUT
        busy = asyncio.create_task(_answered(others[0]))  # 0.4 s on the state thread
        held[1].release()  # flushed after HOLD: another 0.4 s
        await asyncio.sleep(HOLD + 0.02)  # the credit is over, not settled yet
        answer = await _answered(gate)  # carries the refund of the six unspent
        await busy
        await asyncio.sleep(0.6)  # the queue drained
        slow_proxy.delay = 0.0
        return answer

    try:
        answer = asyncio.run(scenario())
        client = secured_server.client()
        tat = float(client.hget(gate.keys.function_quota,  # type: ignore[arg-type]
                                bucket_field(1, 100)))
        seconds, micros = client.time()  # type: ignore[misc]
        ahead = tat - (seconds + micros / 1e6)
    finally:
        state.close()
    assert answer[0] == "unavailable" and answer[1] < TIMEOUT + SLACK, answer
    # Six used, at one a second: the rate's time at most 6 s ahead (12 s: not refunded).
    assert ahead <= 6.0, ahead


def test_a_steady_stream_of_releases_does_not_starve_admissions(
        slow_proxy: SlowProxy) -> None:
    """Releases of another tenant every 5 ms, to a store answering each round trip in a
    fifth of the timeout: each release timer queued one more flush on the state thread,
    each a round trip while releases kept coming, so an admission queued behind them
    got `on_unavailable`. One flush waits at a time, taking all that is queued: the
    admission waits for two round trips at most."""
    state = _state(slow_proxy.url())
    gate = state.gate(_spec("g", concurrency=5))
    other = state.gate(GateSpec("o", "other", Quota(concurrency=400), Quota(), 30.0, None))
    leases = [other.admit() for _ in range(300)]
    gate.admit().release()  # scripts loaded, the connection made

    async def scenario() -> tuple[str, float]:
        await asyncio.sleep(0.1)
        slow_proxy.delay = 0.16 * TIMEOUT
        asked: asyncio.Task[tuple[str, float]] | None = None
        for count, lease in enumerate(leases):  # 1.5 s of releases
            lease.release()
            await asyncio.sleep(0.005)
            if count == 120:
                asked = asyncio.create_task(_answered(gate))
        assert asked is not None
        return await asked

    try:
        answer = asyncio.run(scenario())
    finally:
        state.close()
    assert answer[0] == "admitted" and answer[1] < TIMEOUT + SLACK, answer


class Resolver:
    """`dead` names resolve only after 5 s (a resolver that does not answer; then a
    failure), `known` ones to the address given, every other name as before."""

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.known: dict[str, str] = {}
        self.released = threading.Event()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    """Only the resolver function is replaced (see `Resolver`)."""
    real = socket.getaddrinfo
    names = Resolver()

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names.dead:
            names.released.wait(5.0)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(names.known.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield names
    names.released.set()


@pytest.fixture
def dead_resolver(resolver: Resolver) -> Callable[[str], None]:
    """Names given to it do not resolve (see `Resolver`)."""
    return resolver.dead.add


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_resolver_that_does_not_answer_costs_an_admission_its_timeout(
        dead_resolver: Callable[[str], None], path: str, policy: str) -> None:
    """The store's name resolved on the admission's path without any bound: a resolver
    that did not answer held every admission for as long as it took (here 5 s). The
    admission gets `on_unavailable` within its timeout."""
    dead_resolver("redis.state.invalid")
    state = RedisState(StateSettings("redis://redis.state.invalid:6379/0", policy, TIMEOUT),
                       LocalState(degraded=True), env={})
    try:
        gate = state.gate(_spec(concurrency=5))
        began = time.monotonic()
        if policy == "fail_closed":
            with pytest.raises(StateUnavailable):
                _admit(gate, path)
        else:
            lease = _admit(gate, path)
            assert lease.degraded
            lease.release()
        assert time.monotonic() - began < TIMEOUT + SLACK
    finally:
        state.close()


def test_a_listing_whose_store_name_does_not_resolve_ends_within_the_timeout(
        dead_resolver: Callable[[str], None]) -> None:
    """`stockade breaker list` resolves the name within its connect timeout too."""
    dead_resolver("redis.state.invalid")
    settings = StateSettings("redis://redis.state.invalid:6379/0", "fail_closed", TIMEOUT)
    with SharedBreakers(settings, env={}) as breakers:
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            breakers.entries()
        assert time.monotonic() - began < TIMEOUT + SLACK


def test_a_resolver_that_does_not_answer_is_asked_once_at_a_time(
        dead_resolver: Callable[[str], None]) -> None:
    """Admissions after admissions while the resolver hangs: one lookup (and one
    connection being made) at a time, not a thread each."""
    dead_resolver("redis.state.invalid")
    state = RedisState(StateSettings("redis://redis.state.invalid:6379/0", "fail_closed",
                                     0.1), LocalState(), env={})
    try:
        gate = state.gate(_spec(concurrency=5))
        before = threading.active_count()
        for _ in range(10):
            state._retry_at = 0.0  # as once the retry interval is over
            with pytest.raises(StateUnavailable):
                gate.admit()
        assert threading.active_count() - before <= 2
    finally:
        state.close()


@pytest.mark.parametrize("when", ["in flight", "as answered"])
@pytest.mark.parametrize("held", ["slot", "rate", "probe"])
def test_an_admission_cancelled_in_flight_gives_back_what_redis_granted(
        secured_server: RedisServer, slow_proxy: SlowProxy, monkeypatch: pytest.MonkeyPatch,
        held: str, when: str) -> None:
    """A request cancelled (its client gone) while its admission was on its way: the
    concurrency slot, rate or half-open probe Redis granted it stayed taken until the
    lease expired (30 s here), the rate's interval passed (5 s here) or `probe_timeout`
    (5 minutes): a client sending and dropping requests held a tenant's slots, spent
    its rate and kept a breaker from closing. Each goes back as soon as the answer
    comes; so it does when the request is cancelled in the very turn of the event loop
    its answer came in, before it could resume (then nothing was given back)."""
    from stockade.state import BreakerOpen
    from stockade.telemetry.breaker import BreakerConfig

    near, far = _state(secured_server.url), _state(slow_proxy.url())
    breaker = "function:f" if held == "probe" else None
    quota = {"slot": {"concurrency": 1}, "rate": {"rate": 0.2, "burst": 1}}.get(held, {})
    spec = GateSpec("f", "acme", Quota(**quota), Quota(), 30.0, breaker)  # type: ignore[arg-type]
    try:
        if breaker is not None:
            config = BreakerConfig(threshold=1, window=60, cooldown=0.2)
            near.breakers(config, None).record(breaker, "acme", True)
            far.breakers(config, None)
            time.sleep(0.3)  # cooldown over: the next admission is the probe
        gate = far.gate(spec)

        warm = far.gate(_spec("warm", concurrency=5))
        asking: list[asyncio.Task[Lease]] = []
        answer = far._answer

        def answered(*args: Any) -> None:
            answer(*args)
            if asking:  # the client goes away in the turn its answer came in
                asking.pop().cancel()

        if when == "as answered":
            monkeypatch.setattr(far, "_answer", answered)

        async def cancelled() -> None:
            (await warm.admit_async()).release()  # connected, scripts loaded
            await asyncio.sleep(0.1)
            slow_proxy.delay = 0.2
            task = asyncio.create_task(gate.admit_async())
            if when == "as answered":
                asking.append(task)
            else:
                await asyncio.sleep(0.05)  # sent, not answered
                task.cancel()
            await asyncio.sleep(0.8)  # answered; what it got given back through the proxy
            assert task.cancelled()

        asyncio.run(cancelled())
        try:
            lease = near.gate(spec).admit()
        except (QuotaExceeded, BreakerOpen) as exc:
            pytest.fail(f"still held by the cancelled request: {exc}")
        assert lease.probe == (breaker is not None)
        lease.release()
    finally:
        near.close()
        far.close()


def test_a_lookup_under_way_when_the_process_forks_does_not_hold_the_child(
        resolver: Resolver) -> None:
    """A worker forked while a lookup of the store's name was under way: the child has
    no thread to finish it, and must not wait for it."""
    import os

    from stockade.state.client import resolve

    resolver.dead.add("redis.state.invalid")
    with pytest.raises(TimeoutError):
        resolve("redis.state.invalid", 6379, 0, 0.05)  # left under way
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            resolver.dead.clear()
            resolver.known["redis.state.invalid"] = "127.0.0.1"
            code = 0 if resolve("redis.state.invalid", 6379, 0, 1.0) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child waited on its parent's lookup"


def test_a_violation_waiting_for_a_connection_is_sent_before_the_state_closes(
        secured_server: RedisServer, slow_proxy: SlowProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    """A fresh replica's violation recorded while its connection is being made waits
    for it, then is sent; closed meanwhile (a reload, a shutdown), the state dropped it
    and logged "a script failed: I/O operation on closed file" (found by review).
    Closing now waits for it, as long as its connection may take."""
    from stockade.telemetry.breaker import BreakerConfig

    slow_proxy.delay = 0.3 * TIMEOUT  # each step within the timeout: the store is up
    state = _state(slow_proxy.url())
    try:
        breakers = state.breakers(BreakerConfig(threshold=1), None)
        assert breakers.record("function:f", "acme", True) is None  # still connecting
        time.sleep(0.05)
    finally:
        began = time.monotonic()
        state.close()
        closing = time.monotonic() - began
    keys = secured_server.client().keys("*")
    assert any(key.endswith(":v:function:f") for key in keys), keys
    assert closing < 10 * TIMEOUT, closing
    assert not [record for record in caplog.records if "closed file" in record.getMessage()]

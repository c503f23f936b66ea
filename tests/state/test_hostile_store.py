"""A store that answers slowly, hugely or wrongly gets the configured `on_unavailable`.

redis-py bounds each read, not a reply, and takes the lengths a reply announces on trust:
a reply sent one byte at a time held every admission of a worker for as long as the
store liked, and one announcing 4 GB grew the worker past 2.5 GB; a reply of the wrong
shape raised IndexError into every request, a 500 (found by review). The store here is
a socket speaking just enough of Redis's protocol to be connected to.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stockade.state import GateSpec, LocalState, Quota, StateSettings, StateUnavailable
from stockade.state.client import MAX_REPLY
from stockade.state.redisstate import RedisState

TIMEOUT = 0.3
Answer = Callable[[socket.socket], None]


def _admit(gate: Any, path: str) -> None:
    """One admission through `gate` on `path`: "sync" (off a loop) or on an event loop."""
    if path == "sync":
        gate.admit()
    else:
        asyncio.run(gate.admit_async())


def _trickle(conn: socket.socket) -> None:
    conn.sendall(b"$100000\r\n")
    for _ in range(200):  # one byte every 0.1 s: each read within the timeout
        conn.sendall(b"a")
        time.sleep(0.1)


def _flood(head: bytes, chunk: bytes) -> Answer:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head)
        for _ in range(8 * MAX_REPLY // len(chunk)):  # eight times the bound, then stop
            conn.sendall(chunk)
    return answer


def _array(*fields: bytes) -> bytes:
    """A RESP array of bulk strings, as scripts answer."""
    return b"*%d\r\n" % len(fields) + b"".join(b"$%d\r\n%s\r\n" % (len(field), field)
                                               for field in fields)


# An admission answer's tail when every request it counts is granted (`scripts.ADMIT`).
_WHOLE = (b"none", b"-", b"1")


def _once(reply: bytes) -> Answer:
    return lambda conn: conn.sendall(reply)


def _command(stream: socket.SocketIO) -> list[bytes] | None:
    line = stream.readline()
    if not line.startswith(b"*"):
        return None
    args = []
    for _ in range(int(line[1:])):
        size = int(stream.readline()[1:])
        args.append(stream.read(size + 2)[:-2])
    return args


@pytest.fixture
def hostile_store() -> Iterator[Callable[..., str]]:
    """A store answering every script call with `answer` (and the commands named in
    `commands` with theirs); its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()
    answers: list[Answer] = []
    others: dict[bytes, Answer] = {}

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            try:
                while (command := _command(stream)) is not None:  # type: ignore[arg-type]
                    name = command[0].upper()
                    if name in (b"EVALSHA", b"EVAL"):
                        answers[0](conn)
                    elif name in others:
                        others[name](conn)
                    elif name == b"SCRIPT":
                        conn.sendall(b"$40\r\n" + b"0" * 40 + b"\r\n")
                    else:
                        conn.sendall(b"+OK\r\n")
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def start(answer: Answer, commands: dict[bytes, Answer] | None = None) -> str:
        answers.append(answer)
        others.update(commands or {})
        return f"redis://127.0.0.1:{listener.getsockname()[1]}/0"

    yield start
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.parametrize("answer", [
    _trickle,
    _flood(b"$4000000000\r\n", b"a" * 65536),
    _flood(b"*2000000000\r\n", b":1\r\n" * 16384),
    _flood(b"+", b"a" * 65536),
    _once(b"*1\r\n$2\r\nok\r\n"),
    _once(b"*-1\r\n"),
    _once(b":1\r\n"),
    _once(b"*3\r\n$4\r\nrate\r\n:1\r\n$1\r\n1\r\n"),
    _once(b"*1\r\n" * 100_000 + b":1\r\n"),
    _once(_array(b"rate", b"function", b"inf")),
    _once(_array(b"cpu", b"tenant", b"nan")),
    _once(_array(b"rate", b"tenant", b"1e300")),
    _once(_array(b"breaker", b"open", b"1e20", b"0", b"1")),
    _once(_array(b"breaker", b"closing", b"1", b"0", b"1")),
    _once(_array(b"ok", b"1", b"x", b"1", b"1", b"1", *_WHOLE)),
    _once(_array(b"ok", b"0", b"0", b"1", b"1.5", b"1", *_WHOLE)),
    _once(_array(b"ok", b"0", b"0", b"1", b"1", b"1")),
    _once(_array(b"ok", b"0", b"0", b"1", b"1", b"1", b"rate", b"half_open", b"1")),
    _once(_array(b"ok", b"0", b"0", b"1", b"1", b"1", b"rate", b"tenant", b"inf")),
    _once(_array(b"rate", b"function", b"1")),
], ids=["trickle", "huge-bulk", "huge-array", "endless-line", "short", "nil", "integer",
        "not-text", "deep", "inf-wait", "nan-wait", "huge-wait", "far-until", "odd-state",
        "odd-denied", "odd-grant", "no-cut", "odd-cut", "inf-cut-wait", "no-such-quota"])
def test_a_hostile_store_is_unavailable_within_its_timeout(
        hostile_store: Callable[..., str], answer: Answer) -> None:
    url = hostile_store(answer)
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=5), 30.0, None))
        tracemalloc.start()
        began = time.monotonic()
        try:
            with pytest.raises(StateUnavailable):
                gate.admit()
            took = time.monotonic() - began
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert took < TIMEOUT + 1.0  # not one read's timeout per byte
        # The flood is eight bounds long; a line is copied as it grows (three bounds).
        assert peak < 4 * MAX_REPLY, peak
    finally:
        state.close()


@pytest.mark.parametrize("answer", [
    _once(b"*1\r\n$4\r\nopen\r\n"),
    _once(b"*6\r\n$4\r\nopen\r\n$6\r\nclosed\r\n$3\r\nten\r\n$1\r\n1\r\n$1\r\n1\r\n$1\r\n1\r\n"),
    _once(b"*2\r\n$6\r\nclosed\r\n:1\r\n"),
    _once(b"*-1\r\n"),
    _once(b":1\r\n"),
    _once(b"*1\r\n" * 100_000 + b":1\r\n"),
    _once(_array(b"open", b"closed", b"1", b"inf", b"0", b"1")),
    _once(_array(b"open", b"closed", b"1", b"1", b"0", b"nan")),
    _once(_array(b"open", b"closed", b"1", b"1e20", b"0", b"1")),
    _once(_array(b"closed", b"0", b"-inf")),
], ids=["short-open", "not-a-number", "short-closed", "nil", "integer", "deep", "inf-until",
        "nan-at", "far-until", "closed-at-minus-inf"])
def test_a_hostile_store_cannot_break_a_breaker_record(
        hostile_store: Callable[..., str], answer: Answer,
        caplog: pytest.LogCaptureFixture) -> None:
    """A breaker's count read from a reply of the wrong shape is lost, as a lost round
    trip's is, and said once: it raised IndexError or ValueError into the run's end."""
    from stockade.telemetry.breaker import BreakerConfig

    url = hostile_store(answer)
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        breakers = state.breakers(BreakerConfig(threshold=1), None)
        for _ in range(2):
            assert breakers.record("function:f", "acme", True, source="198.51.100.7") is None
        assert breakers.counted("function:f", "acme", "198.51.100.7") in (True, False)
        assert sum("breaker" in record.getMessage() for record in caplog.records) <= 2
    finally:
        state.close()


@pytest.mark.parametrize("commands", [
    {b"TIME": _once(_array(b"1"))},
    {b"TIME": _once(_array(b"1", b"0")), b"SCAN": _once(b"*2\r\n$1\r\n0\r\n*1\r\n:7\r\n")},
    {b"TIME": _once(_array(b"1", b"0")), b"SCAN": _once(b"*1\r\n" * 60_000 + b":1\r\n")},
    {b"TIME": _once(_array(b"1", b"0")),
     b"SCAN": _once(b"*2\r\n$1\r\n0\r\n" + _array(b"stockade:{t}:b:k")),
     b"HGETALL": _once(b"*4\r\n$5\r\nstate\r\n*1\r\n:1\r\n$3\r\nkey\r\n:9\r\n")},
    {b"TIME": _once(_array(b"9" * 400, b"0"))},
    {b"TIME": _once(_array(b"1", b"9" * 400))},
    {b"TIME": _once(_array(b"1", b"0")), b"SCAN": _once(b"*2\r\n$1\r\n7\r\n*0\r\n")},
], ids=["short-time", "key-not-text", "deep-scan", "fields-not-text", "huge-seconds",
        "huge-micros", "endless-cursor"])
def test_a_hostile_store_cannot_break_breaker_list(
        hostile_store: Callable[..., str], commands: dict[bytes, Answer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`stockade breaker list` reads a store it may not trust: a reply of the wrong
    shape is one StateUnavailable (exit 69), or a listing; it was an IndexError,
    AttributeError or RecursionError traceback (found by review)."""
    from stockade.state import breakers as module
    from stockade.state.breakers import SharedBreakers

    url = hostile_store(_once(b"+OK\r\n"), commands)
    # A cursor that never came back to 0 was asked for ever (found by review): bounded
    # by pages and time, here made small.
    monkeypatch.setattr(module, "LISTING_SECONDS", 2.0)
    with SharedBreakers(StateSettings(url, "fail_closed", TIMEOUT), env={}) as breakers:
        started = time.monotonic()
        try:
            entries = breakers.entries()
        except StateUnavailable:
            assert time.monotonic() - started < 30
            return
    assert all(isinstance(entry.state, str) and isinstance(entry.key, str)
               for entry in entries)


@pytest.mark.parametrize("answer", [
    _once(_array(b"ok", b"1", b"0", b"x", b"1", b"1", *_WHOLE)),
    _once(_array(b"ok", b"0", b"0", b"1", b"0" * 5000 + b"1", b"1", *_WHOLE)),
    _once(_array(b"ok", b"0", b"0", b"1", "١".encode(), b"1", *_WHOLE)),
    _once(_array(b"ok", b"0", b"\xff\xfe", b"1", b"1", b"1", *_WHOLE)),
    _once(b":x\r\n"),
    _once(b"*x\r\n"),
], ids=["probe-at-text", "count-past-int", "count-not-ascii", "not-utf8", "integer-not-one",
        "array-length-not-one"])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_answer_that_cannot_be_read_is_a_failed_decision(
        hostile_store: Callable[..., str], answer: Answer, path: str) -> None:
    """Every answer, on the gateway's own (async) path too: a probe time that is not a
    number, a count past what int() reads or RESP redis-py cannot parse raised ValueError
    into the request, a 500 whatever `on_unavailable` said (found by review)."""
    url = hostile_store(answer)
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=5), 30.0, None))
        with pytest.raises(StateUnavailable):
            _admit(gate, path)
    finally:
        state.close()


def test_a_grant_is_never_more_than_a_gate_asks_for(
        hostile_store: Callable[..., str]) -> None:
    """An answer granting 8M admissions had the event loop make 8M lease ids (674 MiB,
    2.5 s; 2^33 would have killed the worker; found by review)."""
    from stockade.state.credit import MAX_GRANT

    url = hostile_store(_once(_array(b"ok", b"0", b"0", b"1", b"8000000", b"8000000",
                                     *_WHOLE)))
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=5), 30.0, None))

        async def admitted() -> int:
            await gate.admit_async()
            credit = gate._credit
            return 0 if credit is None else credit.tokens + len(credit.free or ())

        tracemalloc.start()
        try:
            held = asyncio.run(admitted())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert held <= 2 * MAX_GRANT and peak < 16 * 1024**2, (held, peak)
    finally:
        state.close()


def test_a_store_answering_noscript_is_not_sent_the_scripts_each_time(
        hostile_store: Callable[..., str]) -> None:
    """A store answering every script call with NOSCRIPT had each admission load the
    three scripts again, each load within a timeout of its own (1.4 s an admission with
    a 0.5 s timeout, found by review): they are loaded again at most once a second."""
    from stockade.state.redisstate import RETRY_INTERVAL

    loads = []

    def script(conn: socket.socket) -> None:
        loads.append(time.monotonic())
        conn.sendall(b"$40\r\n" + b"0" * 40 + b"\r\n")

    url = hostile_store(_once(b"-NOSCRIPT No matching script.\r\n"), {b"SCRIPT": script})
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=5), 30.0, None))
        began = time.monotonic()
        for _ in range(10):
            with pytest.raises(StateUnavailable):
                gate.admit()
        spent = time.monotonic() - began
    finally:
        state.close()
    assert len(loads) <= 3 * (1 + int(spent / RETRY_INTERVAL)), (len(loads), spent)


def _scan_of(count: int) -> Answer:
    names = [b"stockade:{acme}:b:function:f%d" % n for n in range(count)]
    return _once(b"*2\r\n$1\r\n0\r\n" + _array(*names))


def test_a_listing_of_slow_breakers_ends_within_its_bound(
        hostile_store: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing's bound was checked between SCAN pages only: one page of names, each
    answered just within the timeout, kept `breaker list` going for minutes (found by
    review)."""
    from stockade.state import breakers as module
    from stockade.state.breakers import SharedBreakers

    def slow_hash(conn: socket.socket) -> None:
        time.sleep(0.2)
        conn.sendall(_array(b"state", b"open"))

    url = hostile_store(_once(b"+OK\r\n"), {
        b"TIME": _once(_array(b"1", b"0")), b"SCAN": _scan_of(40),
        b"HGETALL": slow_hash, b"ZCOUNT": _once(b":0\r\n")})
    monkeypatch.setattr(module, "LISTING_SECONDS", 1.0)
    with SharedBreakers(StateSettings(url, "fail_closed", TIMEOUT), env={}) as breakers:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="did not end"):
            breakers.entries()
        assert time.monotonic() - started < 1.0 + 3 * TIMEOUT  # not 40 x 0.2 s


def test_a_reset_cut_short_still_tells_what_it_removed(
        hostile_store: Callable[..., str]) -> None:
    """A reset that lost the store after deleting some breakers discarded their list:
    `breaker reset` audited none of them (found by review)."""
    from stockade.state.breakers import SharedBreakers
    from stockade.telemetry.breaker import BreakerEntry

    deletes = []

    def delete(conn: socket.socket) -> None:
        deletes.append(1)
        if len(deletes) > 1:
            conn.shutdown(socket.SHUT_RDWR)  # the store is lost at the second
            raise OSError("gone")
        conn.sendall(b":2\r\n")

    url = hostile_store(_once(b"+OK\r\n"), {
        b"TIME": _once(_array(b"1", b"0")), b"SCAN": _scan_of(3),
        b"HGETALL": _once(_array(b"state", b"open")), b"ZCOUNT": _once(b":0\r\n"),
        b"DEL": delete})
    removed: list[BreakerEntry] = []
    with SharedBreakers(StateSettings(url, "fail_closed", TIMEOUT), env={}) as breakers:
        with pytest.raises(StateUnavailable):
            breakers.reset("", None, removed)
    assert [entry.key for entry in removed] == ["function:f0"]


def test_a_reset_of_slow_breakers_ends_within_its_bound(
        hostile_store: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the listing was bounded: deletes answered just within the timeout each kept
    `breaker reset` going (found by review). Those deleted are still told."""
    from stockade.state import breakers as module
    from stockade.state.breakers import SharedBreakers
    from stockade.telemetry.breaker import BreakerEntry

    def slow_delete(conn: socket.socket) -> None:
        time.sleep(0.2)
        conn.sendall(b":2\r\n")

    url = hostile_store(_once(b"+OK\r\n"), {
        b"TIME": _once(_array(b"1", b"0")), b"SCAN": _scan_of(40),
        b"HGETALL": _once(_array(b"state", b"open")), b"ZCOUNT": _once(b":0\r\n"),
        b"DEL": slow_delete})
    monkeypatch.setattr(module, "LISTING_SECONDS", 1.0)
    removed: list[BreakerEntry] = []
    with SharedBreakers(StateSettings(url, "fail_closed", TIMEOUT), env={}) as breakers:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="did not end"):
            breakers.reset("", None, removed)
        assert time.monotonic() - started < 1.0 + 3 * TIMEOUT
    assert 0 < len(removed) < 40


def _slow(reply: bytes, seen: list[bytes], name: bytes, delay: float = 0.2) -> Answer:
    def answer(conn: socket.socket) -> None:
        seen.append(name)
        time.sleep(delay)
        conn.sendall(reply)
    return answer


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("slow", ["every-command", "scripts"])
def test_one_admission_has_one_timeout_in_all(
        hostile_store: Callable[..., str], path: str, slow: str) -> None:
    """A store answering every command after 0.45 s, and NOSCRIPT whatever was loaded:
    one admission with a 0.5 s timeout made 11 calls (a connection's handshake, EVALSHA,
    a second connection's handshake, three loads, EVALSHA again), each with a timeout of
    its own, and got its 503 after 5 s (found by review). The round trip, handshake and
    reload included, has one timeout; scripts are loaded on the connection it holds."""
    timeout, seen = 0.5, []
    handshake = 0.2 if slow == "every-command" else 0.0
    url = hostile_store(_slow(b"-NOSCRIPT No matching script.\r\n", seen, b"EVALSHA"), {
        b"CLIENT": _slow(b"+OK\r\n", seen, b"CLIENT", handshake),
        b"SCRIPT": _slow(b"$40\r\n" + b"0" * 40 + b"\r\n", seen, b"SCRIPT")})
    state = RedisState(StateSettings(url, "fail_closed", timeout), LocalState(), env={})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(), Quota(concurrency=5), 30.0, None))
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            _admit(gate, path)
        took = time.monotonic() - began
    finally:
        state.close()
    assert took < timeout + 0.3, (took, seen)  # not 1 s, 2.2 s
    assert seen.count(b"CLIENT") <= 3, seen  # one connection's handshake, not two


def _huge_names(pages: int, size: int) -> Answer:
    """SCAN pages of one breaker name `size` bytes long each, then one real name."""
    scans = []

    def answer(conn: socket.socket) -> None:
        scans.append(1)
        if len(scans) > pages:
            conn.sendall(b"*2\r\n$1\r\n0\r\n" + _array(b"stockade:{acme}:b:function:f"))
            return
        name = b"stockade:{t%d}:b:" % len(scans) + b"x" * size
        conn.sendall(b"*2\r\n$1\r\n1\r\n" + _array(name))
    return answer


def test_breaker_names_of_megabytes_are_skipped_and_memory_stays_small(
        hostile_store: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    """Each SCAN page naming one breaker of 8 MB, whose hash said `open`: every name was
    kept whole (twice), and `breaker list` grew to 2.9 GB in 30 s within every bound it
    had (16 MiB a reply, 100,000 names; found by review). A name longer than any real
    one is skipped, and counted in one line."""
    from stockade.state.breakers import MAX_NAME, SharedBreakers

    url = hostile_store(_once(b"+OK\r\n"), {
        b"TIME": _once(_array(b"1", b"0")), b"SCAN": _huge_names(30, 1024**2),
        b"HGETALL": _once(_array(b"state", b"open")), b"ZCOUNT": _once(b":0\r\n")})
    with SharedBreakers(StateSettings(url, "fail_closed", 2.0), env={}) as breakers:
        tracemalloc.start()
        try:
            entries = breakers.entries()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [(entry.key, entry.tenant) for entry in entries] == [("function:f", "acme")]
    assert peak < 12 * 1024**2, peak  # one page at a time, not 30 x 2 MiB kept
    [note] = [r.getMessage() for r in caplog.records if "shared breakers" in r.getMessage()]
    assert f"30 names over {MAX_NAME} characters skipped" in note, note


def test_the_text_a_listing_keeps_is_bounded(
        hostile_store: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Names within their bound, fields too long to be a breaker's are read as missing;
    what the listing keeps in all is bounded as well (exit 69 past it)."""
    from stockade.state import breakers as module
    from stockade.state.breakers import SharedBreakers

    commands = {b"TIME": _once(_array(b"1", b"0")), b"SCAN": _scan_of(200),
                b"HGETALL": _once(_array(b"state", b"open" * 100_000, b"tenant", b"acme")),
                b"ZCOUNT": _once(b":0\r\n")}
    url = hostile_store(_once(b"+OK\r\n"), commands)
    with SharedBreakers(StateSettings(url, "fail_closed", 2.0), env={}) as breakers:
        entries = breakers.entries()
        assert len(entries) == 200 and {entry.state for entry in entries} == {"closed"}
        monkeypatch.setattr(module, "MAX_KEPT", 4096)
        with pytest.raises(StateUnavailable, match="did not end.*more than 4 KiB"):
            breakers.entries()


@pytest.mark.parametrize(("answer", "longest"), [
    (_array(b"breaker", b"open", b"8000000000", b"3", b"1"), 5.0),
    (_array(b"rate", b"function", b"8000000000"), 1.0),  # its window: 4 at 4/s
    (_array(b"cpu", b"tenant", b"8000000000"), 60.0),
], ids=["breaker-open", "rate", "cpu"])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_refusal_asks_no_longer_wait_than_its_limit_can(
        hostile_store: Callable[..., str], answer: bytes, longest: float,
        path: str) -> None:
    """A store answering a refusal whose wait is 253 years (within 2^33 s, so read as
    a number) made the refusal ask for it: a Retry-After no client should follow, and a
    breaker reset by hand or a quota refilled did not change it. A wait is at most what
    the limit that refuses can ask: a breaker opens for its cooldown, a rate's bucket is
    its window ahead at most (the script clamps one an earlier manifest filled), a CPU
    budget refills within its minute."""
    from stockade.state import BreakerOpen, QuotaExceeded
    from stockade.telemetry.breaker import BreakerConfig

    url = hostile_store(_once(answer))
    state = RedisState(StateSettings(url, "fail_closed", TIMEOUT), LocalState(), env={})
    try:
        state.breakers(BreakerConfig(threshold=1, cooldown=5.0), None)
        gate = state.gate(GateSpec("f", "acme", Quota(rate=4, burst=4),
                                   Quota(cpu_per_minute=10), 30.0, "function:f"))
        with pytest.raises((BreakerOpen, QuotaExceeded)) as refused:
            _admit(gate, path)
    finally:
        state.close()
    assert 0 < refused.value.retry_after <= longest, refused.value.retry_after

"""Request bodies cannot exhaust a gateway worker's memory: clients that send a body almost
whole, then hold it (each byte received buys time), are bounded in total and per client
address, and the ones past the bound get 503 at once."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stockade.errors import PolicyError, StockadeError
from stockade.gateway import load_manifest
from stockade.gateway.messages import Request
from stockade.gateway.requestbudget import RequestBudget

from .conftest import Start, module
from .test_confine import gateway_workers, status

MiB = 1024**2
HOLDERS = 40


def hold_body(port: int, source: str) -> socket.socket | bytes:
    """A connection that declared 1 MiB and sent all of it but the last byte; or, when the
    gateway refused the body and closed the connection before the client had sent it all,
    what it answered (b"" when the reset lost it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % MiB
                     + b"x" * (MiB - 1))
    except (BrokenPipeError, ConnectionResetError):
        with sock:
            return answered(sock)
    return sock


def answered(sock: socket.socket) -> bytes:
    """What the gateway answered so far on `sock` (b"" when it is still waiting)."""
    sock.settimeout(0.2)
    try:
        return sock.recv(65536)
    except (TimeoutError, OSError):
        return b""


def echo_gateway(start_gateway: Start, total: str, per_client: str) -> tuple[Any, int]:
    """A one-worker gateway echoing bodies of up to `per_client`, with a body budget of
    `total` and `per_client`; and its port."""
    gateway = start_gateway(f"""
[server]
workers = 1
telemetry = "off"
body_buffer = "{total}"
body_buffer_per_client = "{per_client}"
[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
isolate = "none"
max_body = "{per_client}"
""")
    port = urlsplit(gateway.url).port
    assert port is not None
    return gateway, port


def test_held_bodies_are_bounded_per_client_and_in_total(start_gateway: Start) -> None:
    gateway, port = echo_gateway(start_gateway, "8MiB", "4MiB")
    (worker,) = gateway_workers(gateway)
    before = int(status(worker)["VmHWM"].split()[0]) * 1024
    attempts = [hold_body(port, "127.0.0.2") for _ in range(HOLDERS)]
    holders = [sock for sock in attempts if isinstance(sock, socket.socket)]
    try:
        time.sleep(2.0)
        # Cut off while sending: refused before the client was done (the only reason the
        # gateway closes these connections).
        cut = [a for a in attempts if isinstance(a, bytes)]
        answers = [answered(sock) for sock in holders]
        refused = [a for a in answers + cut if a.startswith(b"HTTP/1.1 503 ")]
        # 4 MiB per client address: at most four 1 MiB bodies are held, the rest refused.
        assert len(refused) + cut.count(b"") >= HOLDERS - 4, answers
        assert all(b"retry-after:" in a.lower() for a in refused)
        # Another client address (127.0.0.1) still gets its body through.
        response = gateway.client.post("/echo", content=b"y" * 1000)
        assert response.status_code == 200, response.text
        peak = int(status(worker)["VmHWM"].split()[0]) * 1024
        # Unbounded, the 40 held bodies alone took 40 MiB.
        assert peak - before < 24 * MiB, (before, peak)
    finally:
        for sock in holders:
            sock.close()
    # Bodies given up by their clients are given back: the address may send again.
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=("127.0.0.2", 0)) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (3 * MiB) + b"z" * (3 * MiB))
            answer = sock.recv(64)
        if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_four_addresses_holding_the_whole_budget_do_not_lock_others_out(
        start_gateway: Start) -> None:
    """Attack: four addresses each hold their whole allowance (a body sent but for its
    last byte): the worker's budget is full, and every other client's body was refused
    until they let go. A newcomer within its fair share is served; one of the holders'
    bodies is cut off (503, closed) to make room."""
    gateway, port = echo_gateway(start_gateway, "4MiB", "1MiB")
    holders = [hold_body(port, f"127.0.0.{2 + index}") for index in range(4)]
    try:
        assert all(isinstance(sock, socket.socket) for sock in holders), holders
        time.sleep(6.0)  # every held byte is read (and charged), and they stall (5 s)
        response = gateway.client.post("/echo", content=b"y" * 100_000)
        assert response.status_code == 200, response.text
        answers = [answered(sock) for sock in holders]  # type: ignore[arg-type]
        cut = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        assert len(cut) == 1 and b"more than its share" in cut[0], answers
    finally:
        for sock in holders:
            if isinstance(sock, socket.socket):
                sock.close()


def test_a_max_body_no_client_may_send_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "stockade.toml"
    path.write_text('[server]\nbody_buffer_per_client = "1MiB"\n[[function]]\nname = "f"\n'
                    'route = "/f"\nmodule = "f.wasm"\nmax_body = "2MiB"\n')
    with pytest.raises(PolicyError, match=r"function\[0\] \(f\)\.max_body: 2MiB is more"):
        load_manifest(path)


def test_a_body_budget_share_is_a_hosts_not_an_addresss() -> None:
    """`body_buffer_per_client` counts an IPv6 client as its /64, as the connection cap
    does: a host given a whole /64 shares one allowance among its addresses (it took a
    worker's whole body budget with four of them)."""
    budget = RequestBudget(100, 10)
    first = budget.hold("2001:db8:1:2::1")
    first.charge(8, None)
    with pytest.raises(StockadeError, match="this client"):
        budget.hold("2001:db8:1:2::2").charge(8, None)
    budget.hold("2001:db8:1:3::1").charge(8, None)  # another host
    budget.hold("::ffff:203.0.113.7").charge(8, None)
    with pytest.raises(StockadeError, match="this client"):
        budget.hold("203.0.113.7").charge(8, None)  # the same IPv4 client, however written
    first.release()
    first.release()  # twice gives back nothing more
    budget.hold("2001:db8:1:2::2").charge(8, None)
    assert budget.held == 24
    wide = RequestBudget(100, 10, ipv6_prefix=128)  # `max_connections_ipv6_prefix = 128`
    wide.hold("2001:db8:1:2::1").charge(8, None)
    wide.hold("2001:db8:1:2::2").charge(8, None)


def _reading() -> None:
    """A hold's `stop` where no read is there to end: its `cut` tells."""


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_budget_cuts_off_the_largest_holder_above_its_share() -> None:
    """Attack: `total / per_client` addresses (4 by default) each hold their whole
    allowance with bodies sent slowly, and every other client's body was refused until
    they let go. A client within its fair share now takes room from the largest holder
    above its share: that holder's stalled body is cut off with 503."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 40, clock=clock)
        reads = []
        for address, size in (("10.0.0.1", 40), ("10.0.0.2", 35), ("10.0.0.3", 25)):
            request = Request("POST", "/f", "", [(b"content-length", b"1000")],
                              client=(address, 1), receive=_chunks(size))
            reads.append(asyncio.create_task(request.read_body(
                1000, 10.0, 1, budget.hold(address))))
        await asyncio.sleep(0.05)
        assert budget.held == 100
        # Still arriving fast (all of it within the same instant): never cut off.
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.4").charge(20, None)
        clock.now += 6  # nothing more came: stalled
        # Past its share (100 / 4 = 25): refused, nothing cut off.
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.4").charge(26, None)
        assert not any(read.done() for read in reads)
        newcomer = budget.hold("10.0.0.4")
        newcomer.charge(20, None)  # within it: 10.0.0.1's body is cut off
        with pytest.raises(StockadeError, match="more than its share") as cut:
            await reads[0]
        assert cut.value.http_status == 503  # type: ignore[attr-defined]
        assert budget.held == 80 and not reads[1].done() and not reads[2].done()
        # 10.0.0.2 (35) is above the share of 25: the next newcomer cuts it off.
        budget.hold("10.0.0.5").charge(25, None)
        with pytest.raises(StockadeError, match="more than its share"):
            await reads[1]
        # What is left is at or below the share, or read whole: nothing more is cut off.
        for read in reads[2:]:
            read.cancel()
        newcomer.read()
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.6").charge(60, None)

    asyncio.run(scenario())


def test_a_few_bytes_from_new_addresses_do_not_cut_off_a_fast_upload() -> None:
    """Attack (the review of the cutting): with the budget full of honest uploads, a tiny
    body from each new address cut one off. A body arriving fast frees its room soon by
    itself: only slow or stalled ones are cut off, the smallest that makes the room."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 60, slow_rate=5, clock=clock)
        fast = budget.hold("10.0.0.1")
        fast.charge(30, _reading)
        clock.now += 0.5
        fast.charge(30, _reading)  # 60 bytes in 0.5 s: fast
        slow = [budget.hold("10.0.0.2") for _ in range(2)]
        slow[0].charge(25, _reading)
        slow[1].charge(15, _reading)
        clock.now += 0.5
        fast.charge(0, _reading)  # and still arriving
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.3").charge(10, None)
        assert not fast.cut
        clock.now += 6  # 10.0.0.2's bodies stalled; the upload still comes, fast enough
        fast.charge(0, _reading)
        budget.hold("10.0.0.3").charge(10, None)
        assert (fast.cut, slow[0].cut, slow[1].cut) == (False, False, True)

    asyncio.run(scenario())


def test_a_burst_then_a_trickle_is_slow() -> None:
    """Attack (the third review): each body a burst, then a byte every 0.9 s: fast on
    average for a minute and never stalled, so never cut off, and four addresses held
    the budget again. A body is judged by its last seconds."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 60, slow_rate=5, clock=clock)
        trickle = budget.hold("10.0.0.1")
        trickle.charge(50, _reading)
        for _ in range(8):
            clock.now += 0.9
            trickle.charge(1, _reading)
        budget.hold("10.0.0.2").charge(40, None)
        budget.hold("10.0.0.3").charge(10, None)  # 58 in 7.2 s, but 2-3 bytes of late
        assert trickle.cut

    asyncio.run(scenario())


def test_a_holder_counted_twice_is_cut_off_once() -> None:
    """The review of the cutting: a client whose count came back to an earlier value had
    two entries in the heap; its body was counted twice toward the room, then cut twice
    (500: AttributeError), and the room was never made. Now it is looked at once, and
    when not enough room can be made nothing is cut off."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 100, clock=clock)
        bodies = [budget.hold("10.0.0.3") for _ in range(3)]
        for body in bodies:
            body.charge(10, _reading)
        short = budget.hold("10.0.0.3")
        short.charge(5, None)
        short.read()
        short.release()  # back to 30: a second entry (-30, 10.0.0.3)
        for address, size in (("10.0.0.1", 20), ("10.0.0.2", 50)):
            whole = budget.hold(address)
            whole.charge(size, None)
            whole.read()
        clock.now += 6
        # 10.0.0.3 may give 5 (down to the share of 25): not the 20 wanted.
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.4").charge(20, None)
        assert not any(body.cut for body in bodies) and budget.held == 100
        budget.hold("10.0.0.4").charge(5, None)  # that much it may cut off: one body
        assert [body.cut for body in bodies].count(True) == 1 and budget.held == 95

    asyncio.run(scenario())


def test_a_body_cut_off_with_its_last_chunk_on_the_way_stays_cut_off() -> None:
    """The review of the cutting: the cut moves the read's deadline to now, but the
    body's last chunk, already received, woke its read first: the body was served with
    most of its bytes given back to the budget."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 100, clock=clock)
        chunks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        request = Request("POST", "/f", "", [(b"content-length", b"70")],
                          client=("10.0.0.1", 1), receive=chunks.get)
        victim = budget.hold("10.0.0.1")
        read = asyncio.create_task(request.read_body(1000, 10.0, 1, victim))
        chunks.put_nowait({"type": "http.request", "body": b"v" * 60, "more_body": True})
        await asyncio.sleep(0.01)
        other = budget.hold("10.0.0.2")
        other.charge(40, None)
        other.read()
        clock.now += 6
        chunks.put_nowait({"type": "http.request", "body": b"v" * 10, "more_body": False})
        budget.hold("10.0.0.3").charge(20, None)  # in the same turn of the loop
        with pytest.raises(StockadeError, match="more than its share"):
            await read
        assert budget.held == 60 and victim.held == 0

    asyncio.run(scenario())


def test_bodies_read_whole_are_never_cut_off() -> None:
    clock = Clock()
    budget = RequestBudget(100, 60, clock=clock)
    whole = budget.hold("10.0.0.1")
    whole.charge(60, None)
    whole.read()
    budget.hold("10.0.0.2").charge(40, None)
    clock.now += 5
    with pytest.raises(StockadeError, match="too many request bodies"):
        budget.hold("10.0.0.3").charge(10, None)
    assert whole.held == 60 and whole.refusal() is None


def test_nothing_is_cut_off_for_a_body_that_still_would_not_fit() -> None:
    """Cutting off bodies that do not make enough room would lose them for nothing."""

    async def scenario() -> None:
        clock = Clock()
        budget = RequestBudget(100, 60, clock=clock)
        whole = budget.hold("10.0.0.1")
        whole.charge(50, None)
        whole.read()
        reading = budget.hold("10.0.0.1")
        reading.charge(10, _reading)
        budget.hold("10.0.0.2").charge(40, None)
        clock.now += 6
        with pytest.raises(StockadeError, match="too many request bodies"):
            budget.hold("10.0.0.3").charge(20, None)  # cutting 10 would leave 10 short
        assert not reading.cut and budget.held == 100

    asyncio.run(scenario())


def _chunks(size: int) -> Any:
    """A receive that delivers `size` bytes, then waits for more that never come."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"x" * size, "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
    return receive

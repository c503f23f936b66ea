"""Request bodies cannot exhaust a gateway worker's memory: clients that send a body almost
whole, then hold it (each byte received buys time), are bounded in total and per client
address, and the ones past the bound get 503 at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stockade.errors import PolicyError, StockadeError
from stockade.gateway import load_manifest
from stockade.gateway.bodybudget import BodyBudget

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


def test_held_bodies_are_bounded_per_client_and_in_total(start_gateway: Start) -> None:
    gateway = start_gateway(f"""
[server]
workers = 1
telemetry = "off"
body_buffer = "8MiB"
body_buffer_per_client = "4MiB"
[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
isolate = "none"
max_body = "4MiB"
""")
    port = urlsplit(gateway.url).port
    assert port is not None
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
    budget = BodyBudget(100, 10)
    budget.take("2001:db8:1:2::1", 8)
    with pytest.raises(StockadeError, match="this client"):
        budget.take("2001:db8:1:2::2", 8)
    budget.take("2001:db8:1:3::1", 8)  # another host
    budget.take("::ffff:203.0.113.7", 8)
    with pytest.raises(StockadeError, match="this client"):
        budget.take("203.0.113.7", 8)  # the same IPv4 client, however it is written
    budget.give("2001:db8:1:2::1", 8)
    budget.take("2001:db8:1:2::2", 8)
    assert budget.held == 24
    wide = BodyBudget(100, 10, ipv6_prefix=128)  # `max_connections_ipv6_prefix = 128`
    wide.take("2001:db8:1:2::1", 8)
    wide.take("2001:db8:1:2::2", 8)

"""Attack: one client opens connection after connection and holds them, to take every
descriptor and connection the worker has. `[server] max_connections_per_ip` bounds what
one peer address holds: the connections past it are answered 503 and closed when they
are accepted (counted, logged once), while a client at another address is served, and
the address gets connections again once it closes its own."""

from __future__ import annotations

import selectors
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from stockade.errors import PolicyError
from stockade.gateway.settings import parse_server

from .conftest import Start, module

CAP = 8
OPENED = 40
HOSTILE = "127.0.0.2"  # all of 127/8 is this host's loopback: a second client address


def _manifest() -> str:
    return f"""
[server]
workers = 1
header_timeout = "60s"
max_connections_per_ip = {CAP}

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
"""


def _refused(sockets: list[socket.socket], expected: int, patience: float) -> set[int]:
    """The sockets the server answered and closed unasked, waiting until `expected` of
    them were or `patience` seconds have passed."""
    answered: set[int] = set()
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(sockets):
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + patience
        while len(answered) < expected and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                index = key.data
                data = sockets[index].recv(4096)
                if data:
                    assert data.startswith(b"HTTP/1.1 503 "), data
                selector.unregister(sockets[index])
                answered.add(index)
    return answered


def test_one_address_holding_connections_is_capped_and_others_are_served(
        start_gateway: Start) -> None:
    gateway = start_gateway(_manifest())
    url = urlsplit(gateway.url)
    address = (url.hostname or "127.0.0.1", url.port or 80)
    held = []
    try:
        for _ in range(OPENED):  # opened and held, never a byte sent
            sock = socket.socket()
            sock.bind((HOSTILE, 0))
            sock.connect(address)
            held.append(sock)
        refused = _refused(held, OPENED - CAP, 10.0)
        assert len(refused) == OPENED - CAP, f"{len(refused)} of {OPENED} refused"
        time.sleep(0.5)  # no more are closed than the cap asks
        assert len(refused | _refused(held, OPENED, 0.5)) == OPENED - CAP
        # Another client is served meanwhile.
        assert gateway.client.get("/hello").status_code == 200
        gateway.wait_for_log(rf"{HOSTILE} holds {CAP} connections \(max_connections_per_ip\)")
        log = gateway.log()
        assert log.count("max_connections_per_ip") == 1, log  # one line, not one a refusal
        metrics = gateway.client.get("/metrics").text
        assert f"stockade_gateway_connections_refused_total {OPENED - CAP}" in metrics, metrics
        # The held connections still work: a request on one is answered.
        kept = next(s for i, s in enumerate(held) if i not in refused)
        kept.sendall(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        kept.settimeout(30.0)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    # Closed, they are given back: the address is served again.
    transport = httpx.HTTPTransport(local_address=HOSTILE)
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=30.0) as client:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                status = client.get("/hello").status_code
            except httpx.TransportError:
                status = 0
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200


def test_the_cap_is_a_positive_count_named_in_its_error() -> None:
    assert parse_server({}, "m.toml").max_connections_per_ip == 256
    for bad in (0, -1, "many", True, 2_000_000):
        with pytest.raises(PolicyError, match=r"m\.toml: server\.max_connections_per_ip"):
            parse_server({"max_connections_per_ip": bad}, "m.toml")

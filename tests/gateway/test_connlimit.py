"""Attack: one client opens connection after connection and holds them, to take every
descriptor and connection the worker has. `[server] max_connections_per_ip` bounds what
one peer address holds: the connections past it are answered 503 and closed when they
are accepted (counted, logged once), while a client at another address is served, and
the address gets connections again once it closes its own."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from stockade.errors import PolicyError
from stockade.gateway.connlimit import PeerConnections, peer_key
from stockade.gateway.conntable import ConnectionTable
from stockade.gateway.settings import parse_server

from .conftest import Start, module

CAP = 8
OPENED = 40
HOSTILE = "127.0.0.2"  # all of 127/8 is this host's loopback: a second client address
T = TypeVar("T")


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


# -- IPv6: one host's /64 is one address; an IPv4 client on a dual-stack socket is its
#    IPv4 address --------------------------------------------------------------------

NET = "2001:db8:1:2::"  # documentation prefix: routed to `lo` inside the namespace only
OTHER_NET = "2001:db8:1:3::"
_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15  # binds an address no interface holds (the namespace routes it to lo)


class NetNamespace:
    """A network namespace of its own (so this host's network is never changed) where
    `lo` is up and every address of `NET` and `OTHER_NET` is local; `call(fn)` runs `fn`
    on a thread inside it: sockets made there, and processes started there, live in it."""

    def __init__(self) -> None:
        import shutil
        import subprocess

        if shutil.which("unshare") is None or shutil.which("ip") is None:
            pytest.skip("needs unshare(1) and ip(8) to make a network namespace")
        script = (f"ip link set lo up && ip -6 route add local {NET}/64 dev lo && "
                  f"ip -6 route add local {OTHER_NET}/64 dev lo && echo ready && exec sleep 3600")
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", script],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline() != b"ready\n":
            self.holder.kill()
            _, err = self.holder.communicate()
            assert self.holder.stderr is not None
            self.holder.stdout.close()
            self.holder.stderr.close()
            pytest.skip(f"cannot make a network namespace here: {err.decode().strip()}")
        from concurrent.futures import ThreadPoolExecutor

        self._thread = ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        import ctypes
        import os

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the namespace's thread."""
        return self._thread.submit(fn).result()

    def close(self) -> None:
        self._thread.shutdown()
        self.holder.kill()
        self.holder.communicate()


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    """A network namespace with IPv6 networks on its loopback (skips without one)."""
    space = NetNamespace()
    try:
        yield space
    finally:
        space.close()


def _dual_stack_manifest() -> str:
    # An IPv6 host is bound dual-stack (`listener.py`): IPv4 clients arrive as
    # ::ffff:a.b.c.d.
    return _manifest().replace("workers = 1", 'workers = 1\nhost = "::"\nreuse_port = true')


def _connect(port: int, source: str, family: int = socket.AF_INET6,
             target: str = "::1") -> socket.socket:
    sock = socket.socket(family)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
    sock.bind((source, 0))
    sock.connect((target, port))
    return sock


def _get(port: int, source: str, family: int = socket.AF_INET6,
         target: str = "::1") -> bytes:
    with _connect(port, source, family, target) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        sock.settimeout(30.0)
        return sock.recv(4096)


def test_one_ipv6_host_cannot_pass_the_cap_with_more_addresses_of_its_64(
        start_gateway: Start, netns: NetNamespace) -> None:
    gateway = netns.call(lambda: start_gateway(_dual_stack_manifest()))
    port = urlsplit(gateway.url).port or 80
    # One connection from each of OPENED addresses of one /64: one host's addresses.
    held = netns.call(lambda: [_connect(port, f"{NET}{index + 1:x}")
                               for index in range(OPENED)])
    try:
        refused = _refused(held, OPENED - CAP, 10.0)
        assert len(refused) == OPENED - CAP, f"{len(refused)} of {OPENED} refused"
        gateway.wait_for_log(rf"{NET}/64 holds {CAP} connections \(max_connections_per_ip\)")
        # Another /64, and the IPv6 loopback, are other hosts: served meanwhile.
        assert netns.call(lambda: _get(port, f"{OTHER_NET}1")).startswith(b"HTTP/1.1 200 ")
        assert netns.call(lambda: _get(port, "::1")).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


def test_an_ipv4_client_on_a_dual_stack_socket_is_counted_as_its_ipv4_address(
        start_gateway: Start, netns: NetNamespace) -> None:
    gateway = netns.call(lambda: start_gateway(_dual_stack_manifest()))
    port = urlsplit(gateway.url).port or 80
    held = netns.call(lambda: [_connect(port, HOSTILE, socket.AF_INET, "127.0.0.1")
                               for _ in range(OPENED)])
    try:
        refused = _refused(held, OPENED - CAP, 10.0)
        assert len(refused) == OPENED - CAP, f"{len(refused)} of {OPENED} refused"
        # Counted (and named) as 127.0.0.2, the address its IPv4-only twin would show.
        gateway.wait_for_log(rf"\]: {HOSTILE} holds {CAP} connections")
        assert "::ffff:" not in gateway.log()
    finally:
        for sock in held:
            sock.close()


def test_an_address_is_counted_by_its_host() -> None:
    assert peer_key("203.0.113.7") == "203.0.113.7"
    assert peer_key("::ffff:203.0.113.7") == "203.0.113.7"
    # Through a NAT64 translator each IPv4 client keeps its own allowance (as one /64
    # every IPv4 client shared one).
    assert peer_key("64:ff9b::203.0.113.7") == "203.0.113.7"
    assert peer_key("64:ff9b::203.0.113.8") == "203.0.113.8"
    assert peer_key("64:ff9b:1::1") == "64:ff9b:1::/64"  # not the well-known prefix
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2::ffff") \
        == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("fe80::1%eth0") == "fe80::/64"
    assert peer_key("2001:db8:1:2::1", 128) == "2001:db8:1:2::1/128"
    assert peer_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert peer_key("") == ""
    # One allowance for an IPv4 client, however it is written; one for a /64.
    table = ConnectionTable.create(1, 64)
    peers = PeerConnections(2, table.column(0))
    assert peers.open("203.0.113.7") is not None
    assert peers.open("::ffff:203.0.113.7") is not None
    assert peers.open("64:ff9b::203.0.113.7") is None
    assert peers.open("203.0.113.7") is None
    assert peers.open("2001:db8::1") is not None
    second = peers.open("2001:db8::2")
    assert second is not None
    assert peers.open("2001:db8::3") is None
    assert peers.held("2001:db8::99") == 2
    peers.close(second)
    assert peers.open("2001:db8::4") is not None
    table.close()


def test_the_ipv6_prefix_is_a_setting_named_in_its_error() -> None:
    assert parse_server({}, "m.toml").max_connections_ipv6_prefix == 64
    assert parse_server({"max_connections_ipv6_prefix": 56},
                        "m.toml").max_connections_ipv6_prefix == 56
    for bad in (0, 16, 129, "64", True):
        with pytest.raises(PolicyError, match=r"m\.toml: server\.max_connections_ipv6_prefix"):
            parse_server({"max_connections_ipv6_prefix": bad}, "m.toml")


def test_refusals_from_many_addresses_write_a_bounded_number_of_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each address refused gets at most one line per interval, and all of them together
    `LOG_LINES`: clients holding the cap from many addresses (a /48 holds 65,536 /64s)
    write no more than a few; the next line says how many refusals it left out."""
    from stockade.gateway import connlimit

    table = ConnectionTable.create(1, 4096)
    peers = PeerConnections(1, table.column(0))
    try:
        with caplog.at_level("WARNING", logger="stockade.gateway"):
            for host in range(200):
                address = f"198.51.{host // 256}.{host % 256}"
                assert peers.open(address) is not None
                assert peers.open(address) is None
                assert peers.open(address) is None
        lines = [r.getMessage() for r in caplog.records if "max_connections_per_ip" in r.message]
        assert len(lines) == connlimit.LOG_LINES
        # A new interval: its first line counts the lines left out of the last one.
        peers._window = (peers._window[0] - connlimit.LOG_INTERVAL, *peers._window[1:])
        caplog.clear()
        with caplog.at_level("WARNING", logger="stockade.gateway"):
            assert peers.open("203.0.113.1") is not None
            assert peers.open("203.0.113.1") is None
        assert [r.getMessage() for r in caplog.records] == [
            "203.0.113.1 holds 1 connections (max_connections_per_ip): a connection was "
            f"refused with 503 ({2 * (200 - connlimit.LOG_LINES)} refusals of other "
            "addresses not logged)"]
    finally:
        table.close()

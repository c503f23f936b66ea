"""An IPv6 host is served dual-stack whatever the mode: with `host = "::"` an IPv4
client is served on the shared socket (one worker or several) and on the workers' own
SO_REUSEPORT sockets alike, and is counted as its IPv4 address."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from stockade.errors import UsageError
from stockade.gateway.listener import bind_listener

from .conftest import Start, module


def _manifest(workers: int, reuse_port: bool) -> str:
    return f"""
[server]
host = "::"
workers = {workers}
reuse_port = {str(reuse_port).lower()}
telemetry = "off"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
"""


def _get(family: int, address: tuple[str, int]) -> bytes:
    with socket.socket(family) as sock:
        sock.settimeout(30.0)
        sock.connect(address)
        sock.sendall(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        return sock.recv(4096)


@pytest.mark.parametrize(("workers", "reuse_port"), [(1, False), (2, False), (2, True)])
def test_an_ipv6_host_serves_ipv4_clients_too(start_gateway: Start, workers: int,
                                               reuse_port: bool) -> None:
    gateway = start_gateway(_manifest(workers, reuse_port))
    port = urlsplit(gateway.url).port or 80
    assert _get(socket.AF_INET6, ("::1", port)).startswith(b"HTTP/1.1 200 ")
    assert _get(socket.AF_INET, ("127.0.0.1", port)).startswith(b"HTTP/1.1 200 ")


def test_both_modes_bind_dual_stack_and_name_the_address_when_they_cannot() -> None:
    for reuse_port in (False, True):
        with bind_listener("::", 0, reuse_port) as sock:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with bind_listener("::", 0, reuse_port, listen=False) as holder:
            assert holder.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    for host in ("203.0.113.1", "::zz", "no-such-host.invalid", "1.2.3.4.5"):
        with pytest.raises(UsageError, match=r"^cannot listen on \S+: [^\n]+$"):
            bind_listener(host, 0, False)

"""Attack: one client spreads its connections over the workers (`--workers 2`, each its
own SO_REUSEPORT socket, so the kernel deals connections to both) to hold workers × the
cap. `max_connections_per_ip` is one count for the whole server (`conntable.py`): the
cap holds server-wide, and a killed worker's connections are given back."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stockade.gateway.conntable import AT_LIMIT, ConnectionTable

from .conftest import Gateway, Start, module
from .test_confine import gateway_workers
from .test_connlimit import HOSTILE, _refused

CAP = 8
REQUEST = b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n"
OPENED = 40


def _manifest() -> str:
    return f"""
[server]
workers = 2
reuse_port = true
header_timeout = "60s"
telemetry = "off"
max_connections_per_ip = {CAP}

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
"""


def _hold(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((HOSTILE, 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


def _open(sock: socket.socket) -> bool:
    """Whether the server still holds `sock` (a killed worker's were reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_the_cap_holds_across_workers(start_gateway: Start) -> None:
    gateway = start_gateway(_manifest())
    port = urlsplit(gateway.url).port or 80
    held = _hold(port, OPENED)
    try:
        refused = _refused(held, OPENED, 10.0)
        assert len(refused) == OPENED - CAP, f"{OPENED - len(refused)} of {OPENED} kept"
    finally:
        for sock in held:
            sock.close()


def test_a_killed_workers_connections_are_given_back(start_gateway: Start) -> None:
    gateway = start_gateway(_manifest())
    port = urlsplit(gateway.url).port or 80
    held = _hold(port, CAP)
    try:
        os.kill(gateway_workers(gateway)[0], signal.SIGKILL)
        gateway.wait_for_log(r"worker \d exited with -9; restarting it")
        alive = sum(_open(sock) for sock in held)
        more = _hold(port, OPENED)
        try:
            refused = _refused(more, OPENED, 10.0)
            assert OPENED - len(refused) == CAP - alive, (alive, len(refused))
        finally:
            for sock in more:
                sock.close()
    finally:
        for sock in held:
            sock.close()


def server_table(gateway: Gateway) -> ConnectionTable:
    """The running server's own table, mapped from the supervisor's descriptor."""
    fds = Path(f"/proc/{gateway.process.pid}/fd")
    for fd in fds.iterdir():
        if os.readlink(fd).startswith("/memfd:stockade-connections"):
            return ConnectionTable(os.open(fd, os.O_RDWR))
    pytest.fail("the supervisor holds no connection table")


def _ask(source: str, port: int, request: bytes = REQUEST) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30.0)
    try:
        sock.sendall(request)
    except OSError:
        pass  # refused before the request was written
    try:
        return sock, sock.recv(4096)
    except ConnectionResetError:
        return sock, b""



def test_a_full_table_refuses_new_addresses_only(start_gateway: Start) -> None:
    gateway = start_gateway(_manifest().replace(
        "telemetry", 'keep_alive_timeout = "300s"\nmax_connection_addresses = 64\ntelemetry'))
    port = urlsplit(gateway.url).port or 80
    kept: dict[str, socket.socket] = {}
    refused: list[str] = []
    try:
        for index in range(200):
            source = f"127.0.1.{index + 1}"
            sock, answer = _ask(source, port)
            if answer.startswith(b"HTTP/1.1 200 "):
                kept[source] = sock
            else:
                assert answer.startswith(b"HTTP/1.1 503 "), answer
                refused.append(source)
                sock.close()
        # Twice as many cells as addresses: the 64 it is meant for (all but an unlucky
        # few whose 8 cells are taken) fit, and new ones are refused well before 200.
        assert 56 <= len(kept) <= 128 and refused, (len(kept), len(refused))
        # Addresses it holds are served more connections; new ones are still refused.
        for source in list(kept)[:5]:
            sock, answer = _ask(source, port)
            sock.close()
            assert answer.startswith(b"HTTP/1.1 200 "), (source, answer)
        sock, answer = _ask(refused[0], port)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        gateway.wait_for_log(r"max_connection_addresses\): a connection from a new address")
        assert gateway.log().count("max_connection_addresses") <= 2  # once per worker
    finally:
        for sock in kept.values():
            sock.close()
    # Given back: a new address is served again.
    table = server_table(gateway)
    try:
        _wait_zero(table, "127.0.1.1")
    finally:
        table.close()
    sock, answer = _ask(refused[0], port)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def _key(address: str) -> bytes:
    return ipaddress.IPv6Address(f"::ffff:{address}").packed


def _wait_zero(table: ConnectionTable, address: str) -> None:
    deadline = time.monotonic() + 30.0
    while table.addresses() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert table.held(_key(address)) == 0 and table.addresses() == 0, table.held(
        _key(address))


def test_every_way_a_connection_ends_gives_its_count_back(start_gateway: Start) -> None:
    gateway = start_gateway(_manifest().replace("60s", "1s"))
    port = urlsplit(gateway.url).port or 80
    table = server_table(gateway)
    try:
        ends = []
        for _ in range(3):
            ends += [
                _ask(HOSTILE, port),  # served, kept alive, closed by the client
                _ask(HOSTILE, port, b"GET /hello HTTP/1.1\r\nhost:"),  # head timeout
                _ask(HOSTILE, port, b"GET / HTTP/1.1\r\nx: " + b"a" * 100_000),  # 431
                _ask(HOSTILE, port, b"\x00\xff garbage\r\n\r\n"),  # protocol error
                _ask(HOSTILE, port, b"GET /nowhere HTTP/1.1\r\nhost: x\r\n"
                     b"connection: close\r\n\r\n"),  # 404, closed by the server
            ]
        for sock, _ in ends:
            sock.close()
        # Reset by the client mid-head; many at once, past the cap (some refused).
        resets = []
        for _ in range(OPENED):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.bind((HOSTILE, 0))
            sock.connect(("127.0.0.1", port))
            sock.send(b"GET / HT")
            resets.append(sock)
        for sock in resets:
            sock.close()
        _wait_zero(table, HOSTILE)
        # And the address has its whole allowance again.
        held = _hold(port, OPENED)
        try:
            assert OPENED - len(_refused(held, OPENED - CAP, 10.0)) == CAP
            assert table.held(_key(HOSTILE)) == CAP
        finally:
            for sock in held:
                sock.close()
        _wait_zero(table, HOSTILE)
    finally:
        table.close()


def test_the_table_is_sealed_keyed_and_checked_when_attached() -> None:
    table = ConnectionTable.create(2, 64)
    other = ConnectionTable.create(2, 64)
    try:
        with pytest.raises(PermissionError):  # no worker can shrink it under another
            os.ftruncate(table.fd, 64)
        # The cell an address lands in depends on each server's secret key.
        keys = [_key(f"10.0.{i // 256}.{i % 256}") for i in range(64)]
        assert [table.start(k) for k in keys] != [other.start(k) for k in keys]
        # A worker's column is given back whole.
        column = table.column(1)
        cells = [column.acquire(_key(HOSTILE), 3) for _ in range(4)]
        assert cells[3] == AT_LIMIT and table.held(_key(HOSTILE)) == 3
        table.clear(1)
        assert table.held(_key(HOSTILE)) == 0 and table.addresses() == 0
        with pytest.raises(ValueError, match="no column 2 of 2"):
            table.column(2)
    finally:
        table.close()
        table.close()
        other.close()
    for fd in (os.open("/dev/null", os.O_RDWR), os.memfd_create("x"), 9999):
        with pytest.raises(ValueError, match=r"^connection table: descriptor \d+: "
                           r"|^connection table: descriptor \d+ is not a sealed table$"):
            ConnectionTable(fd)


def test_a_held_lock_refuses_new_addresses_instead_of_stalling(start_gateway: Start
                                                                ) -> None:
    """A process of the same user that opened the table (a worker's or the supervisor's
    descriptor, through /proc) and took its lock stalled every worker: each blocked in
    lockf on its event loop, held connections too. Now a new address is refused at once
    and every held one is served."""
    import fcntl

    gateway = start_gateway(_manifest())
    port = urlsplit(gateway.url).port or 80
    kept, answer = _ask("127.0.2.1", port)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    table = server_table(gateway)
    try:
        fcntl.lockf(table.fd, fcntl.LOCK_EX)
        sock, answer = _ask("127.0.2.2", port)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        kept.sendall(REQUEST)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        gateway.wait_for_log(r"the connection table's lock is held by another process")
        fcntl.lockf(table.fd, fcntl.LOCK_UN)
        sock, answer = _ask("127.0.2.2", port)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        kept.close()
        table.close()

"""`reuse_port` gives each worker of one server its own SO_REUSEPORT socket; it does not
let another server in. The kernel groups every SO_REUSEPORT socket of one user on a port:
a second `stockade serve --reuse-port` on a served port started, and the two servers
split the connections between them, each answering with its own manifest."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.errors import UsageError
from stockade.gateway.listener import bind_listener

from .conftest import Gateway, Start, gateway_env, module

MANIFEST = f"""
[server]
workers = 2
telemetry = "off"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
"""


def test_a_second_server_is_refused_a_port_served_with_reuse_port(
        start_gateway: Start, tmp_path: Path, shared_cache: Path) -> None:
    first = start_gateway(MANIFEST, "--reuse-port")
    port = first.url.rsplit(":", 1)[1]
    assert first.client.get("/hello").status_code == 200
    for mode in ("--reuse-port", "--shared-socket"):
        second = subprocess.Popen(
            [sys.executable, "-m", "stockade", "serve", "-c", str(first.manifest),
             "--port", port, mode],
            stderr=subprocess.PIPE, env=gateway_env(shared_cache, tmp_path / "second"))
        try:
            _, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            second.terminate()
            _, err = second.communicate()
            pytest.fail(f"a second server ({mode}) started on the port:\n{err.decode()}")
        lines = err.decode().splitlines()
        assert second.returncode == 125, lines
        assert lines == [f"stockade: cannot listen on 127.0.0.1:{port}: address already in "
                         "use; stop what uses it or choose another --port"], lines
    assert first.client.get("/hello").status_code == 200
    # Once it is gone the port is free again, connections it left in TIME_WAIT or not.
    assert first.stop() == 0
    third = Gateway(first.manifest, gateway_env(shared_cache, tmp_path / "third"),
                    ("--reuse-port",), port=port)
    try:
        assert third.client.get("/hello").status_code == 200
    finally:
        assert third.stop() == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::"])
def test_only_the_servers_own_workers_join_its_port(host: str) -> None:
    with bind_listener(host, 0, True, listen=False) as holder:
        port = holder.getsockname()[1]
        # Another server starting meanwhile, before this one's workers listen.
        with pytest.raises(UsageError, match="address already in use"):
            bind_listener(host, port, True, listen=False)
        with bind_listener(host, port, True, join=True) as worker:
            assert worker.getsockname()[1] == port
            with pytest.raises(UsageError, match="address already in use"):
                bind_listener(host, port, True, listen=False)
            with pytest.raises(UsageError, match="address already in use"):
                bind_listener(host, port, False)
        with bind_listener(host, port, True, join=True):
            pass  # a worker restarted into the port its server holds


def test_time_wait_left_by_a_shared_socket_does_not_refuse_reuse_port() -> None:
    """The first socket holds the port without SO_REUSEADDR: connections a server on a
    shared socket closed first (TIME_WAIT on its side) are in its way; nothing listens,
    so it is bound as before."""
    with bind_listener("127.0.0.1", 0, False) as shared:
        port = shared.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = shared.accept()
            accepted.close()  # the server's side closes first: TIME_WAIT there
            assert client.recv(1) == b""
    with bind_listener("127.0.0.1", port, True, listen=False) as holder:
        assert holder.getsockname()[1] == port
        with bind_listener("127.0.0.1", port, True, join=True):
            pass

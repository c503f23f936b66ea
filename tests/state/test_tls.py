"""`rediss://`: a real `redis-server` speaking TLS, its certificate checked against the
store's name (resolved, and connected to, off the admission's path) and the CA in
`STOCKADE_REDIS_CA_FILE`."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stockade.state import GateSpec, LocalState, Quota, StateSettings, StateUnavailable
from stockade.state.redisstate import RedisState

from .conftest import START_TIMEOUT, free_port


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` and 127.0.0.1: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`redis-server` on a TLS port only: (port, its certificate)."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        pytest.fail("redis-server and openssl are missing: the set-up installs them")
    cert, key = _certificate(tmp_path, "server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with redis.Redis(port=port, ssl=True, ssl_ca_certs=str(cert),
                                 socket_timeout=0.5) as client:
                    if int(client.info("server")["process_id"]) == process.pid:
                        break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"redis-server did not answer TLS on port {port} within "
                            f"{START_TIMEOUT:g} s")
            time.sleep(0.02)
        yield port, cert
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_tls_store_admits_with_its_certificate_checked(
        tls_server: tuple[int, Path], host: str) -> None:
    port, cert = tls_server
    state = RedisState(StateSettings(f"rediss://{host}:{port}/0", "fail_closed", 1.0),
                       LocalState(), env={"STOCKADE_REDIS_CA_FILE": str(cert)})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(concurrency=1), Quota(), 30.0, None))
        lease = gate.admit()
        assert not lease.degraded
        lease.release()

        async def admitted() -> None:
            (await gate.admit_async()).release()

        asyncio.run(admitted())
    finally:
        state.close()


def test_a_tls_store_with_a_certificate_of_another_ca_is_unavailable(
        tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = tls_server
    other, _ = _certificate(tmp_path, "other")
    state = RedisState(StateSettings(f"rediss://localhost:{port}/0", "fail_closed", 1.0),
                       LocalState(), env={"STOCKADE_REDIS_CA_FILE": str(other)})
    try:
        gate = state.gate(GateSpec("f", "acme", Quota(concurrency=1), Quota(), 30.0, None))
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            gate.admit()
        assert time.monotonic() - began < 1.5
    finally:
        state.close()

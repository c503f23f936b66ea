"""A real `stockade serve` in a subprocess on 127.0.0.1 (port 0), and httpx clients."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import GUESTS

FUNCTIONS = GUESTS / "functions"
START_TIMEOUT = 60.0


def module(name: str) -> str:
    """The path of a built example function, for manifests (fails when not built)."""
    path = FUNCTIONS / f"{name}.wasm"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make guests` (scripts/build_guests.py) first")
    return str(path)


class Gateway:
    """A running gateway: `url`, `client`, its stderr lines, signals, `stop()`."""

    def __init__(self, manifest: Path, env: dict[str, str], args: tuple[str, ...],
                 port: str | None = "0") -> None:
        """`port` None: the manifest's port, no `--port`."""
        self.manifest = manifest
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stockade", "serve", "-c", str(manifest),
             *(("--port", port) if port is not None else ()), *args],
            stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self.url = self._wait_for_url()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def _wait_for_url(self) -> str:
        assert self.process.stderr is not None
        timer = threading.Timer(START_TIMEOUT, self.process.kill)
        timer.start()
        try:
            for raw in self.process.stderr:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    return match.group(1)
        finally:
            timer.cancel()
        pytest.fail("the gateway did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace"))

    def log(self) -> str:
        """Everything the gateway wrote to stderr so far."""
        return "".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> None:
        """Wait until a stderr line matches `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return
            time.sleep(0.05)
        pytest.fail(f"no log line matching {pattern!r}:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the supervisor."""
        self.process.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


def client_at(url: str, address: str) -> httpx.Client:
    """A client of the gateway at `url` connecting from `address` (any of 127/8 is this
    host's loopback): another client, as the gateway's per-address counting sees it."""
    return httpx.Client(base_url=url, timeout=30.0,
                        transport=httpx.HTTPTransport(local_address=address))


def violate(url: str, path: str = "/fail", params: dict[str, str] | None = None,
            clients: int = 3, status: int = 502) -> None:
    """One request that hits a limit (by default the `fail` function's output cap) from
    each of `clients` addresses: a function's breaker counts a client once per window,
    so it takes the default threshold's three clients to open it."""
    for index in range(clients):
        with client_at(url, f"127.0.0.{11 + index}") as client:
            response = client.get(path, params={"kind": "flood"} if params is None else params)
            assert response.status_code == status, response.text


def unavailable_reason(response: httpx.Response) -> str | None:
    """The `reason` of a 503 (`breaker`, `queue`, `state`...); None for another status."""
    if response.status_code != 503:
        return None
    reason: str | None = response.json().get("reason")
    return reason


@pytest.fixture(params=["local", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A manifest's `[state]`: none (the server's own) or a real redis-server's."""
    if request.param == "local":
        yield ""
        return
    from ..state.conftest import RedisServer

    server = RedisServer(tmp_path)
    try:
        yield f'[state]\nbackend = "{server.url}"\n'
    finally:
        server.stop()


def breaker_gateway(folder: Path, cache: Path, manifest: str, cooldown: float) -> Gateway:
    """A gateway serving `manifest` (written in `folder`, its state there too) whose
    breakers half-open `cooldown` seconds after they open. Stop it."""
    path = folder / "stockade.toml"
    path.write_text(manifest)
    env = {**gateway_env(cache, folder / "state"), "STOCKADE_BREAKER_COOLDOWN": f"{cooldown:g}s"}
    return Gateway(path, env, ())


def gateway_env(cache: Path, state: Path) -> dict[str, str]:
    """The host environment without STOCKADE_*, OTEL_*, XDG_*; cache and state given,
    and the session's host key (it seals the shared cache)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STOCKADE_", "OTEL_", "XDG_"))}
    env.update(STOCKADE_CACHE_DIR=str(cache), STOCKADE_STATE_DIR=str(state),
               XDG_CONFIG_HOME=str(state.parent / "config"),
               STOCKADE_AUDIT_KEY=str(state.parent / "config" / "stockade" / "audit.key"),
               STOCKADE_CONFIG_DIR=os.environ["STOCKADE_CONFIG_DIR"])
    return env


def gateway_with_open_files(manifest: Path, env: dict[str, str], soft: int) -> Gateway:
    """A gateway started under an open-file limit of `soft` (it inherits this process's,
    put back once it started)."""
    import resource

    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        return Gateway(manifest, env, ())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


Start = Callable[..., Gateway]


@pytest.fixture
def start_gateway(tmp_path: Path, shared_cache: Path) -> Iterator[Start]:
    """Start gateways from manifest text (stopped at the end of the test)."""
    started: list[Gateway] = []

    def start(manifest: str, *args: str, name: str = "stockade.toml") -> Gateway:
        path = tmp_path / name
        path.write_text(manifest)
        gateway = Gateway(path, gateway_env(shared_cache, tmp_path / "state"), args)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()

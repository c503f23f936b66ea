"""A real `redis-server` on 127.0.0.1 (a free port, no persistence), per test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from stockade.state import LocalState, StateSettings
from stockade.state.redisstate import RedisState

START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`redis-server` started by the test: `url`, `stop()`, `start()` again (same port);
    with `password`, clients must authenticate (`requirepass`); `options` are more
    of its command-line options."""

    def __init__(self, directory: Path, password: str = "",
                 options: Sequence[str] = ()) -> None:
        self.directory = directory
        self.password = password
        self.options = list(options)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same port; wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: the set-up installs it (Debian redis-server)")
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        argv += self.options
        self.process = process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5,
                                 password=self.password or None) as client:
                    # This one, not a server another test process started on the port
                    # since (two run at once: `make test`).
                    if int(client.info("server")["process_id"]) == process.pid:
                        return
            except redis.RedisError:
                pass
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on port {self.port} within 10 s "
                    "(or another process holds the port)")

    def client(self) -> redis.Redis:
        """A plain client, for looking at (and spoiling) keys."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2.0,
                           password=self.password or None)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it. Safe twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def connected_state(url: str, timeout: float) -> Iterator[RedisState]:
    """One replica's state backend on `url` (fail_closed), connected, closed after."""
    backend = RedisState(StateSettings(url, timeout=timeout), LocalState(), env={})
    assert backend.connect()
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` for one test."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class SlowProxy:
    """A TCP proxy to `port` on 127.0.0.1 holding each chunk of replies `delay` seconds
    (set it at any time): a store whose every command takes that long to answer; while
    `swallow` is set, it throws away what clients send (requests that never reach the
    store, their answers never come)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.delay = 0.0
        self.swallow = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        try:
            while data := source.recv(65536):
                if held and self.delay:
                    time.sleep(self.delay)
                if held or not self.swallow:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()
        for sock in self._open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def slow_proxy(redis_server: RedisServer) -> Iterator[SlowProxy]:
    """The test's `redis-server` behind a `SlowProxy` (a module may stand another
    server behind it, as `test_slow_store` does)."""
    proxy = SlowProxy(redis_server.port)
    try:
        yield proxy
    finally:
        proxy.close()

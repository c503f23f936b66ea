"""Session fixtures of the runtime tests: a real docker-registry and a real containerd,
each with its state in a temp dir."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..oci.fixtures import BIN, Registry, require, start_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1, storage in a temp dir."""
    yield from start_registry(tmp_path_factory.mktemp("registry"))


@dataclass
class Containerd:
    """A running containerd: `ctr` runs the client against it; `telemetry` is the state
    directory its shims (and so stockade-runtime) record into."""

    socket: Path
    telemetry: Path

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # A namespace of this test process's own: the runc shim keeps its runtime's state
        # under /run/containerd/runc/<namespace>, shared by every containerd and every
        # test run on the machine, where equal container names collided.
        return subprocess.run([require("ctr"), "--address", str(self.socket), "--namespace",
                               f"stockade-test-{os.getpid()}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """containerd 1.6 with root, state and sockets in a temp dir (the CRI plugin off)."""
    if os.geteuid() != 0:
        pytest.skip("containerd needs root (mounts, shims); this run is not root")
    binary = require("containerd")
    base = tmp_path_factory.mktemp("containerd")
    socket = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
        f'[debug]\n  address = "{base}/debug.sock"\n')
    telemetry = base / "stockade-state"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STOCKADE_", "OTEL_", "XDG_"))}
    env.update(STOCKADE_STATE_DIR=str(telemetry), STOCKADE_CACHE_DIR=str(base / "cache"),
               PATH=f"{BIN}:{env.get('PATH', '')}")
    log = open(base / "containerd.log", "wb")
    process = subprocess.Popen([binary, "--config", str(config)], env=env, stdout=log,
                               stderr=log)
    deadline = time.monotonic() + 20
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"containerd did not start: {(base / 'containerd.log').read_text()}")
        time.sleep(0.05)
    try:
        yield Containerd(socket, telemetry)
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        with contextlib.suppress(OSError):  # the shim's state of our namespace, if empty
            os.rmdir(f"/run/containerd/runc/stockade-test-{os.getpid()}")

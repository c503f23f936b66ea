"""Real components for the OCI tests: Debian's docker-registry and containerd, each started
on 127.0.0.1 / in a temp dir with its own configuration, once per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def require(tool: str) -> str:
    """The tool's path; fails (not skips): `make test` installs it (Makefile APT_PACKAGES)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} missing: `make system` installs it (APT_PACKAGES)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    """A running registry: `host` is `127.0.0.1:PORT`, `storage` its filesystem root."""

    host: str
    storage: Path


def start_registry(base: Path) -> Iterator[Registry]:
    binary = require("docker-registry")
    port = free_port()
    storage = base / "storage"
    storage.mkdir()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = open(base / "registry.log", "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            # Answered, by this registry: not one that took the port (another test
            # process's) while this one failed to bind it.
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200 \
                    and process.poll() is None:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"docker-registry did not start: {(base / 'registry.log').read_text()}")
        time.sleep(0.05)
    try:
        yield Registry(f"127.0.0.1:{port}", storage)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def stockade_env(cache: Path, state: Path, registry: Registry | None = None) -> dict[str, str]:
    """A clean environment for `stockade` subprocesses."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STOCKADE_", "OTEL_", "XDG_"))}
    env["STOCKADE_CACHE_DIR"] = str(cache)
    env["STOCKADE_STATE_DIR"] = str(state)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    if registry is not None:
        env["STOCKADE_INSECURE_REGISTRIES"] = registry.host
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `stockade` command line."""
    return subprocess.run([str(BIN / "stockade"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)

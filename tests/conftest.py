"""Shared fixtures: environment isolation, guest modules, the CPython module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "build" / "guests"
REAL = ROOT / "build" / "real"
STOCKADE = [sys.executable, "-m", "stockade"]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AoT cache for the session, so large modules compile once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def shared_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One config directory (the host key that seals the shared cache) for the session,
    also in the environment between tests, where module-scoped servers start."""
    path = tmp_path_factory.mktemp("config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STOCKADE_CONFIG_DIR", str(path / "stockade"))
        yield path


@pytest.fixture(autouse=True)
def isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_cache: Path, shared_config: Path
) -> Iterator[None]:
    """No STOCKADE_*, OTEL_* or XDG_* from the host; caches, keys and state under tmp."""
    for name in list(os.environ):
        if name.startswith(("STOCKADE_", "OTEL_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("STOCKADE_CONFIG_DIR", str(shared_config / "stockade"))
    monkeypatch.setenv("STOCKADE_STATE_DIR", str(tmp_path / "state"))
    # Keys (the audit key) live in the config dir: never the real user's. The audit key
    # (and its counters) are per test, the AoT key is shared with the shared cache.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("STOCKADE_AUDIT_KEY", str(tmp_path / "config" / "stockade" / "audit.key"))
    # CPython for WASI from the build step: `stockade python` must not download in tests.
    if (REAL / "python.wasm").exists():
        monkeypatch.setenv("STOCKADE_PYTHON_WASM", str(REAL / "python.wasm"))
    yield


def guest(name: str) -> Path:
    """A built guest module; fails (not skips) when the build step was not run."""
    path = GUESTS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make guests` (scripts/build_guests.py) first")
    return path


@pytest.fixture(scope="session")
def python_wasm() -> Path:
    """CPython 3.12 for WASI, fetched by scripts/fetch_real_guests.py."""
    path = REAL / "python.wasm"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make real-guests` first")
    return path


def stockade(*args: str, stdin: bytes | None = None, timeout: float = 120) -> (
        subprocess.CompletedProcess[bytes]):
    """Run the real `stockade` command line in a fresh process; its standard input is
    `stdin`, or empty (never the test runner's, which `stockade run` would read)."""
    if stdin is None:
        return subprocess.run([*STOCKADE, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    return subprocess.run(
        [*STOCKADE, *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )

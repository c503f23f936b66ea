"""Shared fixtures: environment isolation, guest modules, the CPython module."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.rmtree import remove_tree

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "build" / "guests"
REAL = ROOT / "build" / "real"
STOCKADE = [sys.executable, "-m", "stockade"]


class _MachineShare:
    """Under pytest-xdist, a test marked `alone` runs with no other test process's test
    beside it: it measures the whole machine (device flushes and writes, kernel threads'
    CPU, a process's share of the CPUs). Every other test shares a lock file it takes
    whole; a turnstile taken first keeps a stream of shared holders from starving it."""

    def __init__(self, directory: Path) -> None:
        self._main = os.open(directory / "machine.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._turn = os.open(directory / "machine.turn", os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, alone: bool) -> None:
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def give(self) -> None:
        fcntl.flock(self._main, fcntl.LOCK_UN)


_share: _MachineShare | None = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Each test's whole protocol (its fixtures' set-up and teardown too) under the
    machine's shared or exclusive lock (`_MachineShare`)."""
    global _share
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    if _share is None:  # the workers' temp dirs share their parent
        factory: pytest.TempPathFactory = item.config._tmp_path_factory  # type: ignore[attr-defined]
        _share = _MachineShare(factory.getbasetemp().parent)
    _share.take(item.get_closest_marker("alone") is not None)
    try:
        yield
    finally:
        _share.give()


def _run_wide(factory: pytest.TempPathFactory, name: str) -> Path:
    """A private directory every test process of this run shares: `make test` runs the
    tests in two processes (pytest-xdist), whose temp dirs share a parent."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return factory.mktemp(name)
    path = factory.getbasetemp().parent / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AoT cache for the run, so large modules compile once (the cache is safe for
    processes writing at once, as a gateway's workers do)."""
    return _run_wide(tmp_path_factory, "cache")


@pytest.fixture(scope="session")
def shared_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One config directory (the host key that seals the shared cache) for the run,
    also in the environment between tests, where module-scoped servers start (the key
    is made once, whole, by whichever process comes first: `stockade.keys`)."""
    path = _run_wide(tmp_path_factory, "config")
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


def refused(proc: subprocess.CompletedProcess[bytes], *words: str) -> str:
    """The one line a command refused with (exit 125, no traceback), holding `words`."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 125, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    for word in words:
        assert word in err, err
    return err


# Runs its arguments under the rlimits given as its first argument ("AS CPU", 0: none) and
# prints their exit status and peak RSS (KiB) on a first line, then their output.
_MEASURE = """
import resource, subprocess, sys
space, cpu = map(int, sys.argv[1].split())
if space:
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
if cpu:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
done = subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL, capture_output=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stdout.buffer.write(b"%d %d\\n" % (done.returncode, usage.ru_maxrss) + done.stdout)
sys.stderr.buffer.write(done.stderr)
"""


def stockade_measured(*args: str, address_space: int = 0, cpu_seconds: int = 0,
                      timeout: float = 120) -> tuple[int, bytes, bytes, int]:
    """`stockade ARGS` as (exit status, stdout, stderr, peak RSS in bytes), under the
    given address-space and CPU limits. Through a small launcher: a process forked from
    this one (hundreds of MB by the end of a run) counts this one's pages in its peak,
    exec or not."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, f"{address_space} {cpu_seconds}",
                           *STOCKADE, *args], capture_output=True, timeout=timeout,
                          check=False)
    status, out = done.stdout.split(b"\n", 1)
    returncode, peak_kib = map(int, status.split())
    return returncode, out, done.stderr, peak_kib * 1024


@pytest.fixture
def tmpdir_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A TMPDIR of this test's own, where its runs make their scratch directories and
    its isolated workers their temporary directories: nothing another test run on this
    machine makes lands in it (`make test` runs two test processes at once). Searchable
    by others (a worker under its own uid must reach it, else the worker falls back to
    the shared /tmp)."""
    tmp = Path(tempfile.mkdtemp(prefix="stockade-test-", dir="/tmp"))
    tmp.chmod(0o755)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # this process has cached it
    yield tmp
    remove_tree(tmp)

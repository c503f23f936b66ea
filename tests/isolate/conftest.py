"""Fixtures for worker isolation: one strict isolated sandbox per test module."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from stockade import Policy
from stockade.isolate import IsolatedSandbox, Protection


@pytest.fixture(scope="module")
def strict_sandbox() -> Iterator[IsolatedSandbox]:
    """An isolated sandbox under the strict profile (its worker starts on first use)."""
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        yield sandbox


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, write end), closed after the test."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def protection(sandbox: IsolatedSandbox, name: str) -> Protection:
    """The named protection of the sandbox's worker."""
    found = [item for item in sandbox.protections() if item.name == name]
    if not found:
        pytest.fail(f"no protection named {name!r} in {sandbox.protections()}")
    return found[0]


def require(sandbox: IsolatedSandbox, name: str) -> None:
    """Skip, printing the reason, when this machine cannot provide the protection."""
    item = protection(sandbox, name)
    if not item.active:
        pytest.skip(f"{name} unavailable on this machine: {item.detail}")


def gone(pid: int) -> bool:
    """True when `pid` neither runs nor lingers as a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state not in ("R", "S", "D", "Z", "T", "t")


def _bytes_read(pid: int) -> int:
    """What `pid` has read so far (`rchar`: pipes included)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/io has no rchar")


def stop_after_reading(pid: int, count: int) -> threading.Thread:
    """SIGSTOP `pid` once it has read `count` more bytes, from a thread watching it:
    a worker stopped partway through the request it is being handed (a standard input
    larger than `count` plus the pipe's buffer keeps its parent writing)."""
    start = _bytes_read(pid)

    def watch() -> None:
        ends = time.monotonic() + 60
        try:
            while time.monotonic() < ends:
                if _bytes_read(pid) - start >= count:
                    os.kill(pid, signal.SIGSTOP)
                    return
                time.sleep(0.0005)
        except (FileNotFoundError, ProcessLookupError):
            return  # gone before it read that much: the test sees it ran to its end

    watcher = threading.Thread(target=watch, name="stop-after-reading", daemon=True)
    watcher.start()
    return watcher


def wait_for_state(pid: int, state: str) -> None:
    """Return once `pid` is in `state` (as /proc/PID/stat shows it); fail after 10 s."""
    gone_by = time.monotonic() + 10
    while time.monotonic() < gone_by:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == state:
                return
        time.sleep(0.01)
    pytest.fail(f"process {pid} never reached state {state}")

"""Gateway processes are not dumpable: another process of the same user cannot open their
descriptors through /proc (the connection table's memfd, which it could write: zero a
client's count, fill every cell) nor trace them. Core dumps were off already; without
PR_SET_DUMPABLE a same-user process could still open `/proc/<worker>/fd/N`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534
# Holds a memfd like the connection table's, confined as a gateway worker or the
# supervisor is (or not), and prints its pid and descriptor.
# Both start as root and become nobody before anything else: nobody cannot exec the
# interpreter in root's home.
BECOME_NOBODY = f"""
import ctypes, ctypes.util, os, sys
os.setgroups([])
os.setresgid({NOBODY}, {NOBODY}, {NOBODY})
os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
"""
HOLDER = """
import sys
if sys.argv[1] == "worker":
    from stockade.gateway.confine import confine_server_process as confine
elif sys.argv[1] == "supervisor":
    from stockade.gateway.confine import not_dumpable as confine
else:
    confine = list
""" + BECOME_NOBODY + """
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable, as if started by nobody (a uid change clears it)
fd = os.memfd_create("stockade-conntable")
confine()
print(os.getpid(), fd, flush=True)
sys.stdin.read()
"""
# Opens another process's descriptor for writing, as an attacker of the same user would.
ATTACKER = BECOME_NOBODY + """
try:
    open(f"/proc/{sys.argv[1]}/fd/{sys.argv[2]}", "r+b").close()
except PermissionError:
    print("refused")
else:
    print("opened")
"""


def environment() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}


def attack(mode: str) -> str:
    env = environment()
    with subprocess.Popen([sys.executable, "-c", HOLDER, mode], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, env=env, cwd="/") as holder:
        try:
            assert holder.stdout is not None
            pid, fd = holder.stdout.readline().split()
            done = subprocess.run([sys.executable, "-c", ATTACKER, pid.decode(), fd.decode()],
                                  capture_output=True, env=env, cwd="/", timeout=60,
                                  check=True)
            return done.stdout.decode().strip()
        finally:
            holder.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run two processes as nobody")
def test_a_same_user_process_cannot_open_a_gateway_process_descriptors() -> None:
    assert attack("none") == "opened"  # the attack works on an ordinary process
    assert attack("worker") == "refused"
    assert attack("supervisor") == "refused"


# A supervisor (as nobody) with its table spawns one worker, through a wrapper that stops
# at once: the stopped wrapper is the worker between its exec (which makes it dumpable
# again) and its confinement, a window another process of the user can hold open with
# SIGSTOP. Prints the pid of the stopped worker.
SPAWNER = """
import sys
import tempfile
from pathlib import Path
from stockade.gateway.confine import not_dumpable
from stockade.gateway.conntable import ConnectionTable
from stockade.gateway.server import Supervisor
""" + BECOME_NOBODY + """
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
supervisor = Supervisor(Path("/nonexistent/stockade.toml"))
not_dumpable()
supervisor._table = ConnectionTable.create(1, 64)
sys.executable = sys.argv[1]
supervisor._spawn(0)
print(supervisor._workers[0].pid, flush=True)
sys.stdin.read()
"""
# Waits until the worker is stopped, then opens every memfd it holds for writing.
PEEKER = BECOME_NOBODY + """
import time
proc = f"/proc/{sys.argv[1]}"
while open(f"{proc}/stat").read().rpartition(")")[2].split()[0] != "T":
    time.sleep(0.01)
found = []
for fd in os.listdir(f"{proc}/fd"):
    if "memfd:" in os.readlink(f"{proc}/fd/{fd}"):
        try:
            open(f"{proc}/fd/{fd}", "r+b").close()
        except PermissionError:
            found.append("refused")
        else:
            found.append("opened")
print(" ".join(found) or "none")
"""


def peek(wrapper: Path) -> str:
    """What a same-user process gets opening the memfds of a worker stopped at its exec."""
    wrapper.write_text("#!/bin/sh\nkill -STOP $$\n")
    wrapper.chmod(0o755)
    with subprocess.Popen([sys.executable, "-c", SPAWNER, str(wrapper)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, env=environment(), cwd="/") as spawner:
        worker = 0
        try:
            assert spawner.stdout is not None
            worker = int(spawner.stdout.readline())
            done = subprocess.run([sys.executable, "-c", PEEKER, str(worker)],
                                  capture_output=True, env=environment(), cwd="/", timeout=60,
                                  check=True)
            return done.stdout.decode().strip()
        finally:
            if worker:
                os.kill(worker, signal.SIGKILL)
            spawner.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run two processes as nobody")
def test_a_starting_worker_holds_no_table_another_process_could_open() -> None:
    # The table is handed over once the worker is confined, never inherited at exec.
    with tempfile.TemporaryDirectory() as tmp:  # pytest's own is root's only
        Path(tmp).chmod(0o755)
        assert peek(Path(tmp) / "python") == "none"

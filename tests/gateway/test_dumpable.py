"""Gateway processes are not dumpable: another process of the same user cannot open their
descriptors through /proc (the connection table's memfd, which it could write: zero a
client's count, fill every cell) nor trace them. Core dumps were off already; without
PR_SET_DUMPABLE a same-user process could still open `/proc/<worker>/fd/N`."""

from __future__ import annotations

import os
import subprocess
import sys
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


def attack(mode: str) -> str:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}
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

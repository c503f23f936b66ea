"""A Landlock rule on procfs outlives the kernel dropping procfs's cached inodes.

procfs makes its inodes on demand and frees them with their dentries; a rule names an
inode, so a worker whose `/proc/self` inode was dropped (memory pressure, or
`drop_caches`) lost read access to its own status and memory size, and later failed
where it reads them (`rlimits`, `checks`). Each case restricts a fresh interpreter,
has the parent drop the caches, then reads `/proc/self` from the restricted child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.isolate.landlock import LandlockUnavailable, abi_version

DROP_CACHES = Path("/proc/sys/vm/drop_caches")

CHILD = r'''
import sys
from pathlib import Path
from stockade.isolate.landlock import PathRule, restrict
restrict([PathRule(Path("/proc/self"))])
print("restricted", flush=True)
sys.stdin.readline()
for name in ("statm", "status", "limits"):
    try:
        Path("/proc/self", name).read_bytes()
        print(name, "read", flush=True)
    except OSError as exc:
        print(name, exc.strerror, flush=True)
try:
    Path("/proc/1/status").read_bytes()
    print("other process read", flush=True)
except OSError as exc:
    print("other process", exc.strerror, flush=True)
'''


def _landlock_or_skip() -> None:
    try:
        abi_version()
    except LandlockUnavailable as exc:
        pytest.skip(f"no Landlock here: {exc}")
    if not os.access(DROP_CACHES, os.W_OK):
        pytest.skip("dropping the kernel's caches needs root")


@pytest.mark.parametrize("rounds", [1, 3])
def test_own_proc_entry_stays_readable_after_the_caches_are_dropped(rounds: int) -> None:
    _landlock_or_skip()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "restricted"
        for _ in range(rounds):
            DROP_CACHES.write_text("2")
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    lines = out.splitlines()
    assert lines[:3] == ["statm read", "status read", "limits read"], out
    # Keeping the rule alive gives no more than the rule: other processes stay closed.
    assert lines[3] == "other process Permission denied", out

"""Drop a worker's Linux capabilities, keeping only those that read and write files.

A root worker keeps the file-access capabilities so that the directories a policy
grants behave as they do in-process, and loses the rest: with CAP_SYS_RESOURCE gone
its hard rlimits cannot be raised again, with CAP_SYS_ADMIN gone it cannot leave its
cgroup or namespaces. Capabilities are per thread: this must run before threads start.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from .protections import Protection

__all__ = ["KEPT_CAPABILITIES", "drop_capabilities", "effective_capabilities"]

# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
KEPT_CAPABILITIES = (1, 2, 3)
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_VERSION_3 = 0x20080522
_SYS_CAPSET = 126  # x86_64


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def effective_capabilities() -> int:
    """This thread's effective capability mask (from /proc/thread-self/status)."""
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def drop_capabilities() -> Protection:
    """Clear the bounding and ambient sets and all but `KEPT_CAPABILITIES`."""
    name = "capabilities"
    if effective_capabilities() == 0:
        return Protection(name, True, "none held (not root)")
    if os.uname().machine != "x86_64":
        return Protection(name, False, f"capset number unknown on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    keep = 0
    for cap in KEPT_CAPABILITIES:
        keep |= 1 << cap
    for cap in range(_last_cap() + 1):
        if not keep & (1 << cap) and libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            return Protection(name, False, f"cannot drop capability {cap} from the bounding "
                              f"set: {os.strerror(ctypes.get_errno())}")
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)(_Data(keep, keep, 0), _Data(0, 0, 0))
    if libc.syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
        return Protection(name, False, f"capset failed: {os.strerror(ctypes.get_errno())}")
    return Protection(name, True, f"dropped all but dac_override, dac_read_search, fowner "
                      f"(effective mask {effective_capabilities():#x})")

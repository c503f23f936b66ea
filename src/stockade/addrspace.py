"""This process's address space: how much of it is mapped now (the kernel's VmSize),
what `RLIMIT_AS` counts against."""

from __future__ import annotations

import resource

__all__ = ["vm_size"]


def vm_size() -> int:
    """This process's current address-space size in bytes (VmSize)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()

"""A private network namespace for a worker: no interface but loopback.

Guests get no sockets from Stockade and the seccomp filter refuses `socket()`; the
namespace is the layer below, for code that escaped both: even a socket would reach
nothing but the worker's own loopback. Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from pathlib import Path

from .protections import Protection

__all__ = ["CLONE_NEWNET", "enter_private_network", "interfaces"]

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def interfaces() -> list[str]:
    """Names of the network interfaces this process sees (its namespace's)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def enter_private_network() -> Protection:
    """Move this process into a new network namespace and bring `lo` up.

    Must run before any thread starts (unshare applies to the calling thread only)
    and before the seccomp filter (which refuses `unshare` and `socket`).
    """
    name = "network namespace"
    if os.geteuid() != 0:
        return Protection(name, False, "needs root (CAP_SYS_ADMIN) to unshare the network")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        return Protection(name, False, f"unshare(CLONE_NEWNET) failed: {os.strerror(code)}")
    try:
        _loopback_up()
        state = "up"
    except OSError as exc:
        state = f"down ({exc.strerror})"
    seen = interfaces()
    return Protection(name, True, f"private; interfaces: {', '.join(seen)}; lo {state}")

"""Named checks a worker runs on itself to show its protections hold (tests, `doctor`).

Each check attempts something a protection must stop and reports whether it was
stopped (`held`). Only the checks listed in `CHECKS` exist: a parent can name one and
pass one integer, never send code.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .netns import CLONE_NEWNET, interfaces

__all__ = ["CHECKS", "run_check"]

Check = Callable[[int], dict[str, Any]]


def _outcome(held: bool, detail: str, value: Any = None) -> dict[str, Any]:
    return {"held": held, "detail": detail, "value": value}


def _socket(family: socket.AddressFamily) -> dict[str, Any]:
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
    except OSError as exc:
        return _outcome(exc.errno == errno.EPERM, f"socket({family.name}): {exc.strerror}",
                        exc.errno)
    return _outcome(False, f"socket({family.name}) succeeded", 0)


def _inet_socket(_: int) -> dict[str, Any]:
    return _socket(socket.AF_INET)


def _unix_socket(_: int) -> dict[str, Any]:
    return _socket(socket.AF_UNIX)


def _spawn(_: int) -> dict[str, Any]:
    try:
        pid = os.posix_spawn("/bin/true", ["true"], {})
    except OSError as exc:
        return _outcome(True, f"posix_spawn: {exc.strerror}", exc.errno)
    os.waitpid(pid, 0)
    return _outcome(False, "posix_spawn started /bin/true", 0)


def _unshare(_: int) -> dict[str, Any]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        return _outcome(True, f"unshare: {os.strerror(code)}", code)
    return _outcome(False, "unshare(CLONE_NEWNET) succeeded", 0)


def _signal_parent(_: int) -> dict[str, Any]:
    """Signal 0 (existence probe) to the parent: refused for any process but itself."""
    try:
        os.kill(os.getppid(), 0)
    except OSError as exc:
        return _outcome(exc.errno == errno.EPERM, f"kill(parent, 0): {exc.strerror}", exc.errno)
    return _outcome(False, "kill(parent, 0) succeeded", 0)


def _address_space(extra: int) -> dict[str, Any]:
    """Reserve `extra` bytes more than RLIMIT_AS allows in total."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return _outcome(False, "RLIMIT_AS is unlimited", None)
    size = soft + max(extra, 0)
    try:
        block = bytearray(size)
    except MemoryError:
        return _outcome(True, f"allocating {size} bytes failed (RLIMIT_AS {soft})", soft)
    del block
    return _outcome(False, f"allocated {size} bytes past RLIMIT_AS {soft}", soft)


def _allocate(size: int) -> dict[str, Any]:
    """Allocate and touch `size` bytes; `held` is True when that failed."""
    try:
        block = bytearray(b"\x01") * size
    except MemoryError:
        return _outcome(True, f"allocating {size} bytes failed", size)
    del block
    return _outcome(False, f"allocated and touched {size} bytes", size)


def _interfaces(_: int) -> dict[str, Any]:
    seen = interfaces()
    return _outcome(seen == ["lo"], f"interfaces: {', '.join(seen)}", seen)


def _status(_: int) -> dict[str, Any]:
    """Seccomp mode, capabilities, cgroups and limits as the worker sees them."""
    status = {key: value.strip() for key, _, value in
              (line.partition(":") for line in Path("/proc/self/status").read_text().splitlines())
              if key in ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff", "CapBnd")}
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in
              ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
               "RLIMIT_CORE")}
    value = {"status": status, "rlimits": limits,
             "cgroup": Path("/proc/self/cgroup").read_text().splitlines()}
    return _outcome(status.get("Seccomp") == "2", f"seccomp mode {status.get('Seccomp')}", value)


CHECKS: dict[str, Check] = {
    "socket_inet": _inet_socket,
    "socket_unix": _unix_socket,
    "spawn": _spawn,
    "unshare": _unshare,
    "signal_parent": _signal_parent,
    "address_space": _address_space,
    "allocate": _allocate,
    "interfaces": _interfaces,
    "status": _status,
}


def run_check(name: str, arg: int) -> dict[str, Any]:
    """Run the named check; `{"held": bool, "detail": str, "value": plain data}`."""
    check = CHECKS.get(name)
    if check is None:
        return _outcome(False, f"no check named {name!r} (known: {', '.join(CHECKS)})")
    return check(arg)

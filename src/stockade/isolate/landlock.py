"""Landlock for workers: the filesystem shrinks to what the worker was granted.

A ruleset handles every filesystem right this kernel's ABI knows (reading, writing,
creating, removing, renaming across directories, truncating, device ioctls), TCP bind
and connect (ABI 4) and, from ABI 6, signals and abstract unix sockets outside the
worker's own domain; the rules then give back read or read-write access beneath each
granted path. Everything else is refused by the kernel (EACCES), whatever the uid and
the file modes say. Landlock also stops ptrace-like access (`/proc/<pid>/mem`,
`environ`) to processes outside the domain.

Landlock restricts the calling thread and the threads it starts afterwards: apply it
before any other thread exists.

A rule is tied to an inode, and procfs builds its inodes on demand and lets the kernel
drop them with their dentries under memory pressure: the `/proc/<pid>` found again
afterwards is a new inode no rule names, and reading `/proc/self/statm` is refused
(seen with `echo 2 > /proc/sys/vm/drop_caches`). The descriptor of each procfs rule is
therefore kept open for the life of the process (`_PINNED`), which keeps its inode.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PathRule", "LandlockUnavailable", "abi_version", "restrict"]

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem rights, by the ABI that introduced them.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = (1 << 8, 1 << 9, 1 << 10,
                                                            1 << 11, 1 << 12)
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
              5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2

_READ = _READ_FILE | _READ_DIR
# Descriptors of procfs rules, held open so that their inodes (and rules) stay alive.
_PINNED: list[int] = []
# Rights on files (a rule on a file may carry these only).
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
# Writing beneath a directory: everything but devices, sockets, FIFOs and execution.
_WRITE = (_WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | _MAKE_SYM
          | _REFER | _TRUNCATE)


class LandlockUnavailable(Exception):
    """The kernel has no Landlock (or it is disabled); the message says which."""


@dataclass(frozen=True)
class PathRule:
    """Access beneath `path` (a directory, or one file): read, or read and write."""

    path: Path
    writable: bool = False


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """This kernel's Landlock ABI version. Raises LandlockUnavailable."""
    if os.uname().machine != "x86_64":
        raise LandlockUnavailable(f"syscall numbers unknown on {os.uname().machine}")
    libc = _libc()
    version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if version < 0:
        code = ctypes.get_errno()
        raise LandlockUnavailable(f"landlock_create_ruleset: {os.strerror(code)} (disabled "
                                  "at boot, or a kernel older than 5.13)")
    return int(version)


def _handled(abi: int) -> tuple[int, int, int]:
    fs = _FS_BY_ABI.get(abi, (1 << 16) - 1)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def restrict(rules: Iterable[PathRule]) -> tuple[int, list[str]]:
    """Restrict this thread (and threads it starts later) to `rules`, with no network.

    Paths that do not exist are skipped. Returns (ABI version, the rules applied, as
    `path (ro|rw)` strings). Irreversible. Raises LandlockUnavailable.
    """
    abi = abi_version()
    fs, net, scoped = _handled(abi)
    libc = _libc()
    attr = _RulesetAttr(fs, net, scoped)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise LandlockUnavailable(f"cannot create a ruleset: {os.strerror(ctypes.get_errno())}")
    applied = []
    procfs = _device("/proc")
    try:
        for rule in rules:
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            status = os.fstat(fd)
            pinned = status.st_dev == procfs
            try:
                access = (_READ | _WRITE if rule.writable else _READ) & fs
                if not stat.S_ISDIR(status.st_mode):
                    access &= _FILE_RIGHTS
                beneath = _PathBeneath(access, fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH,
                                ctypes.byref(beneath), ctypes.c_uint32(0)) != 0:
                    raise LandlockUnavailable(f"cannot add a rule for {rule.path}: "
                                              f"{os.strerror(ctypes.get_errno())}")
            finally:
                if pinned:
                    _PINNED.append(fd)
                else:
                    os.close(fd)
            applied.append(f"{rule.path} ({'rw' if rule.writable else 'ro'})")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise LandlockUnavailable(
                f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return abi, applied

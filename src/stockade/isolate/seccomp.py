"""A seccomp filter for workers: deny what the runtime never needs, through libseccomp.

The filter allows everything by default and answers the listed system calls with an
errno (EPERM), so Python sees a clean `PermissionError` instead of being killed. Rules
are loaded with thread synchronisation (TSYNC), so threads already running (wasmtime's
compiler pool, the epoch ticker) get the filter too. libseccomp kills a thread that
uses a foreign syscall ABI (i386 `int 0x80`), so the rules cannot be sidestepped there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DENIED_SYSCALLS", "SeccompUnavailable", "install_filter", "libseccomp_version"]

# Calls that reach kernel subsystems a worker has no business with: debugging other
# processes, mounting, loading kernels or modules, BPF, keyrings, swap, reboot,
# namespaces after set-up, userfaultfd (exploit primitive), perf, io_uring (bypasses
# this filter), and running other programs.
DENIED_SYSCALLS: tuple[str, ...] = (
    "socket", "socketpair",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "keyctl", "add_key", "request_key",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "vhangup",
    "unshare", "setns", "userfaultfd", "perf_event_open", "fanotify_init",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm",
    "execve", "execveat", "fork", "vfork", "tkill", "pidfd_send_signal",
)
# Signals may only go to the worker itself (uid 0 could signal every root process).
_SIGNAL_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

# clone() is allowed for threads only: a new process or a new namespace is refused.
_CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWCGROUP, NEWTIME
_CLONE_NAMESPACES = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                     0x40000000, 0x02000000, 0x00000080)
_TIOCSTI = 0x5412  # push characters into a terminal's input queue

_ACT_ALLOW = 0x7FFF0000
_ATTR_CTL_TSYNC = 4
_CMP_NE = 1
_CMP_EQ = 4
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class SeccompUnavailable(Exception):
    """libseccomp is missing or the kernel refused the filter; the message says which."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@dataclass(frozen=True)
class _Rule:
    syscall: str
    action: int
    comparisons: tuple[tuple[int, int, int, int], ...] = ()


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc}); install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def libseccomp_version() -> str:
    """The libseccomp version as 'major.minor.micro'. Raises SeccompUnavailable."""

    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib = _load_library()
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    version = lib.seccomp_version().contents
    return f"{version.major}.{version.minor}.{version.micro}"


def _rules(deny: Iterable[str], own_pid: int) -> list[_Rule]:
    eperm = _act_errno(errno.EPERM)
    rules = [_Rule(name, eperm) for name in deny]
    rules += [_Rule(name, eperm, ((0, _CMP_NE, own_pid, 0),)) for name in _SIGNAL_CALLS]
    # glibc's clone3 wrapper falls back to clone() on ENOSYS; clone's flags can be
    # inspected, clone3's (behind a pointer) cannot.
    rules.append(_Rule("clone3", _act_errno(errno.ENOSYS)))
    rules.append(_Rule("clone", eperm, ((0, _CMP_MASKED_EQ, _CLONE_THREAD, 0),)))
    rules += [_Rule("clone", eperm, ((0, _CMP_MASKED_EQ, flag, flag),)) for flag in
              _CLONE_NAMESPACES]
    rules.append(_Rule("ioctl", eperm, ((1, _CMP_EQ, _TIOCSTI, 0),)))
    return rules


def install_filter(deny: Iterable[str] = DENIED_SYSCALLS) -> int:
    """Load the filter into this process (all threads). Returns the number of rules.

    Besides `deny`, signals to other processes are refused, and clone() may make
    threads only (no processes, no namespaces).

    Irreversible: the filter stays for the life of the process and its children.
    Sets `no_new_privs`. Syscalls this kernel does not know are skipped.
    Raises SeccompUnavailable when libseccomp or the kernel cannot do it.
    """
    lib = _load_library()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        if lib.seccomp_attr_set(ctx, _ATTR_CTL_TSYNC, 1) != 0:
            raise SeccompUnavailable("this libseccomp cannot synchronise threads (TSYNC)")
        added = 0
        for rule in _rules(deny, os.getpid()):
            number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number < 0:
                continue
            array = (_ArgCmp * max(1, len(rule.comparisons)))(
                *(_ArgCmp(*cmp) for cmp in rule.comparisons))
            rc = lib.seccomp_rule_add_array(ctx, rule.action, number, len(rule.comparisons),
                                            array)
            if rc != 0:
                raise SeccompUnavailable(
                    f"cannot add a rule for {rule.syscall}: {errno.errorcode.get(-rc, rc)}")
            added += 1
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            code = errno.errorcode.get(-rc, rc)
            raise SeccompUnavailable(f"the kernel refused the filter: {code}")
        return added
    finally:
        lib.seccomp_release(ctx)

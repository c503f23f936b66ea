"""An allow-list seccomp filter for workers, through libseccomp.

Only the system calls the worker loop, the interpreter and wasmtime were measured to
need are allowed (`ALLOWED_SYSCALLS`, measured with the attack suite, the CPython and
QuickJS modules and the isolation tests under `SCMP_ACT_LOG`); every other call fails
with EPERM, so Python sees a clean `PermissionError` and a probe cannot crash the
worker. Some allowed calls are narrowed by their arguments: `clone` makes threads only
(no process, no namespace), `ioctl` takes a short list of harmless requests (compared
on the 32 bits the kernel uses, so TIOCSTI cannot hide in the upper half), signals go
to the worker itself, `prctl` names threads and memory areas only, `prlimit64` touches
this process only, `socket` and `exec` are simply absent.

Rules are loaded with thread synchronisation (TSYNC), so threads already running
(wasmtime's compiler pool, the epoch ticker) get the filter too. libseccomp kills a
thread that uses a foreign syscall ABI (i386 `int 0x80`), so the list cannot be
sidestepped there. Loading needs `no_new_privs` (set by libseccomp) and is irreversible.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

__all__ = ["ALLOWED_SYSCALLS", "ALLOWED_IOCTLS", "SeccompUnavailable", "install_filter",
           "libseccomp_version", "load_library"]

# Plain calls allowed with any arguments: the set measured in workers running the
# attack suite (strict and default), CPython and QuickJS with read-write grants, and the
# isolation tests (strace -f after the filter is loaded), plus the calls of WASI
# operations those runs did not reach (marked "WASI"). Paths are Landlock's business:
# openat is here, the ruleset decides which files it may reach.
ALLOWED_SYSCALLS: tuple[str, ...] = (
    # descriptors and files
    "read", "write", "pread64", "pwrite64", "lseek", "close", "fcntl",
    "openat", "openat2",  # openat2: wasmtime resolves guest paths with RESOLVE_BENEATH
    "newfstatat", "statx", "getdents64", "getcwd",
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "symlinkat",
    "memfd_create",  # wasmtime's copy-on-write images of linear memory
    "epoll_create1", "epoll_ctl", "epoll_wait", "eventfd2",  # wasmtime-wasi's runtime
    # WASI: vectored and positioned I/O, fd_filestat_set_size/_times, fd_allocate,
    # fd_sync, fd_advise, path_link, path_readlink, the worker's chdir to the caller's
    # directory
    "readv", "writev", "preadv", "pwritev", "fstat", "ftruncate", "fallocate", "fsync",
    "fdatasync", "fadvise64", "utimensat", "linkat", "readlinkat", "renameat2", "chdir",
    "epoll_pwait", "ppoll", "poll",
    # memory
    "mmap", "munmap", "mprotect", "mremap", "madvise", "brk",
    # threads, time, identity
    "futex", "set_robust_list", "rseq", "gettid", "getpid", "getppid", "exit",
    "exit_group", "sched_yield", "sched_getaffinity", "clock_nanosleep", "nanosleep",
    "clock_gettime", "clock_getres", "getrusage", "getrandom", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigaction", "sigaltstack", "restart_syscall",
    "getuid", "geteuid", "getgid", "getegid",
)
# ioctl requests allowed (all others: EPERM): TCGETS (isatty, measured), FIONREAD and
# FIONBIO (WASI descriptor calls), FIOCLEX and FIONCLEX.
ALLOWED_IOCTLS: tuple[int, ...] = (0x5401, 0x541B, 0x5421, 0x5450, 0x5451)
# prctl options allowed: PR_SET_NAME/PR_GET_NAME (tokio names its threads),
# PR_SET_NO_NEW_PRIVS (only ever tightens; libseccomp sets it), PR_GET_DUMPABLE.
_ALLOWED_PRCTL = (15, 16, 38, 3)

_CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWCGROUP, NEWTIME
_CLONE_NAMESPACES = (0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                     | 0x40000000 | 0x02000000 | 0x00000080)

_ACT_ALLOW = 0x7FFF0000
_ACT_LOG = 0x7FFC0000
_ATTR_CTL_TSYNC = 4
_CMP_EQ = 4
_CMP_MASKED_EQ = 7
_LOW_32 = 0xFFFFFFFF


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


_LIBRARY: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """Load libseccomp (once). Call it before Landlock hides the library directories.
    Raises SeccompUnavailable."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        # find_library runs ldconfig or a compiler: only when the usual name fails.
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise SeccompUnavailable(f"libseccomp not found ({exc}); install libseccomp2"
                                     ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    _LIBRARY = lib
    return lib


def libseccomp_version() -> str:
    """The libseccomp version as 'major.minor.micro'. Raises SeccompUnavailable."""

    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib = load_library()
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    version = lib.seccomp_version().contents
    return f"{version.major}.{version.minor}.{version.micro}"


def _rules(own_pid: int, extra: tuple[str, ...]) -> list[_Rule]:
    allow = _ACT_ALLOW
    rules = [_Rule(name, allow) for name in (*ALLOWED_SYSCALLS, *extra)]
    # Threads only: CLONE_THREAD set and no namespace flag (one masked comparison).
    rules.append(_Rule("clone", allow, (
        (0, _CMP_MASKED_EQ, _CLONE_THREAD | _CLONE_NAMESPACES, _CLONE_THREAD),)))
    # glibc's clone3 wrapper falls back to clone() on ENOSYS; clone's flags can be
    # inspected, clone3's (behind a pointer) cannot.
    rules.append(_Rule("clone3", _act_errno(errno.ENOSYS)))
    # The request is an int for the kernel: compare its low 32 bits only.
    rules += [_Rule("ioctl", allow, ((1, _CMP_MASKED_EQ, _LOW_32, request),))
              for request in ALLOWED_IOCTLS]
    rules += [_Rule("prctl", allow, ((0, _CMP_EQ, option, 0),)) for option in _ALLOWED_PRCTL]
    # Signals and limits of this process only (a uid shared with another worker must
    # not reach it).
    rules += [_Rule(name, allow, ((0, _CMP_EQ, own_pid, 0),))
              for name in ("kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")]
    rules += [_Rule("prlimit64", allow, ((0, _CMP_EQ, pid, 0),)) for pid in (0, own_pid)]
    return rules


def install_filter(extra: tuple[str, ...] = (), default_errno: int = errno.EPERM,
                   log: bool = False) -> int:
    """Load the allow-list (plus the `extra` calls) into this process (all threads).
    Returns the number of rules.

    Calls outside the list fail with `default_errno` (or, with `log`, are allowed and
    logged by the kernel: for measuring what a workload needs, never for protection).
    Irreversible: the filter stays for the life of the process and its children.
    Sets `no_new_privs`. Syscalls this kernel does not know are skipped.
    Raises SeccompUnavailable when libseccomp or the kernel cannot do it.
    """
    lib = load_library()
    ctx = lib.seccomp_init(_ACT_LOG if log else _act_errno(default_errno))
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        if lib.seccomp_attr_set(ctx, _ATTR_CTL_TSYNC, 1) != 0:
            raise SeccompUnavailable("this libseccomp cannot synchronise threads (TSYNC)")
        added = 0
        for rule in _rules(os.getpid(), extra):
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

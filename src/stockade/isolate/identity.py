"""Who a worker is: an unprivileged uid with no capabilities and `no_new_privs`.

A worker started by root switches to a uid of its own, `uid_base + pid` (unique among
live workers, so workers cannot signal, trace or count against each other's
RLIMIT_NPROC), with no supplementary groups; the switch from uid 0 clears every
capability, and the bounding set is emptied first so nothing can be regained.

Granted directories keep their WASI meaning through idmapped mounts (see `mounts`): in
the worker's mount namespace each one is mounted again with the caller's uid shown as
the worker's, so the worker reads and writes there as the caller would (files it
creates belong to the caller on disk), and nowhere else: elsewhere it is a stranger
to every file, and Landlock refuses the rest anyway. The mapping is a user namespace
that holds no process: it only describes "caller uid <-> worker uid".

A worker started by another user is unprivileged already; it keeps its uid, drops
whatever capabilities it has, and sets `no_new_privs`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from .protections import Protection

__all__ = ["WorkerIdentity", "identity_for", "idmap_namespace", "drop_privileges",
           "capability_masks"]

CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG, _PR_GET_PDEATHSIG = 1, 2
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_CAPSET = 126  # x86_64
_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class WorkerIdentity:
    """The ids a worker runs as (`uid`, `gid`) and the caller's (`host_uid`,
    `host_gid`), which granted directories show as the worker's."""

    uid: int
    gid: int
    host_uid: int
    host_gid: int

    @property
    def switches(self) -> bool:
        """True when the worker changes uid (it was started by root)."""
        return self.uid != self.host_uid


def identity_for(uid_base: int | None) -> WorkerIdentity:
    """This process's identity after the drop: `uid_base + pid` when root and a base is
    set, else the current ids."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and uid_base is not None:
        worker = uid_base + os.getpid()
        return WorkerIdentity(worker, worker, uid, gid)
    return WorkerIdentity(uid, gid, uid, gid)


def idmap_namespace(identity: WorkerIdentity) -> int:
    """A descriptor of a user namespace mapping the caller's ids to the worker's, for
    idmapped mounts. Needs root and a single thread (it forks). Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only exists to own the namespace while it is described
        try:
            os.close(ready_r)
            os.close(done_w)
            code = 0 if libc.unshare(CLONE_NEWUSER) == 0 else 1
            os.write(ready_w, bytes([code]))
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"\0":
            raise OSError("unshare(CLONE_NEWUSER) failed in the mapping helper")
        proc = Path(f"/proc/{pid}")
        (proc / "uid_map").write_text(f"{identity.host_uid} {identity.uid} 1\n")
        (proc / "setgroups").write_text("deny")
        (proc / "gid_map").write_text(f"{identity.host_gid} {identity.gid} 1\n")
        return os.open(proc / "ns" / "user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        with contextlib.suppress(OSError):
            os.write(done_w, b"x")
        os.close(done_w)
        os.waitpid(pid, 0)


def capability_masks() -> dict[str, int]:
    """CapEff, CapPrm, CapBnd and CapAmb of this thread, from /proc/thread-self/status."""
    masks = {}
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
            masks[key] = int(value.split()[0], 16)
    return masks


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _clear_bounding(libc: ctypes.CDLL) -> str | None:
    """Empty the bounding and ambient sets (nothing can be regained by exec); the
    failure in words, or None. Needs CAP_SETPCAP."""
    held = capability_masks()
    if held.get("CapBnd", 0):
        for cap in range(_last_cap() + 1):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and held["CapBnd"] >> cap & 1:
                return f"cannot drop capability {cap}: {os.strerror(ctypes.get_errno())}"
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    return None


def _clear_capabilities(libc: ctypes.CDLL) -> str | None:
    """Empty the inheritable, permitted and effective sets; the failure, or None."""
    held = capability_masks()
    if any(held.get(key, 0) for key in ("CapEff", "CapPrm", "CapInh")):
        if os.uname().machine != "x86_64":
            return f"capset number unknown on {os.uname().machine}"
        data = (_Data * 2)(_Data(0, 0, 0), _Data(0, 0, 0))
        if libc.syscall(_SYS_CAPSET, ctypes.byref(_Header(_VERSION_3, 0)), data) != 0:
            return f"capset failed: {os.strerror(ctypes.get_errno())}"
    return None


def _parent_death_signal(libc: ctypes.CDLL) -> int:
    """The signal this process gets when its parent dies (PR_GET_PDEATHSIG; 0: none)."""
    signal = ctypes.c_int(0)
    libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(signal), 0, 0, 0)
    return signal.value


def drop_privileges(identity: WorkerIdentity) -> list[Protection]:
    """Become `identity.uid` with no groups and no capabilities, and set `no_new_privs`.

    Reports "uid", "capabilities" and "no_new_privs", each verified from
    /proc/thread-self/status rather than assumed. Call before other threads start.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    report = []
    failure = None
    if identity.switches:
        death = _parent_death_signal(libc)
        parent = os.getppid()
        try:
            os.setgroups([])
            os.setresgid(identity.gid, identity.gid, identity.gid)
            failure = _clear_bounding(libc)
            # Leaving uid 0 clears the permitted and effective sets; then the rest.
            os.setresuid(identity.uid, identity.uid, identity.uid)
            failure = failure or _clear_capabilities(libc)
        except OSError as exc:
            failure = failure or f"cannot switch to uid {identity.uid}: {exc.strerror}"
        finally:
            # A change of uid or gid clears the parent-death signal (prctl(2)): a worker
            # tied to its parent outlived it, running on with no one to stop it.
            if death:
                libc.prctl(_PR_SET_PDEATHSIG, death, 0, 0, 0)
                if os.getppid() != parent:  # the parent died before it was set again
                    os._exit(1)
    else:
        failure = _clear_bounding(libc) or _clear_capabilities(libc)
    ids = os.getresuid()
    if identity.switches and set(ids) == {identity.uid}:
        report.append(Protection("uid", True, f"uid/gid {identity.uid} (this worker's own; "
                                 f"granted directories map it to the caller's uid "
                                 f"{identity.host_uid}), no supplementary groups"))
    elif identity.switches:
        report.append(Protection("uid", False, failure or f"still uids {ids}"))
    else:
        report.append(Protection("uid", identity.uid != 0, f"uid {identity.uid}: "
                                 + ("the caller's own, unprivileged" if identity.uid
                                    else "root, and no uid base configured to drop to")))
    masks = capability_masks()
    held = {key: mask for key, mask in masks.items() if mask}
    if held:
        detail = failure or "still held: " + ", ".join(f"{k} {v:#x}" for k, v in held.items())
        report.append(Protection("capabilities", False, detail))
    else:
        report.append(Protection("capabilities", True, "none: effective, permitted, "
                                 "inheritable, ambient and bounding sets are empty"))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        report.append(Protection("no_new_privs", False, os.strerror(ctypes.get_errno())))
    else:
        report.append(Protection("no_new_privs", True, "set: no exec can gain privileges"))
    return report

"""A worker's own mount namespace, with idmapped mounts over the directories it may use.

The namespace is private (nothing propagates to or from the host). Each granted
directory (the policy's preopens, the worker's temporary directory, the AoT cache) is
mounted again over itself as an idmapped mount: on it, files of the caller's uid show
as the worker's (see `identity`), so an unprivileged worker keeps the access the
caller has there, and only there. Read-only grants are also mounted read-only.
Nested grants are covered by the outermost one. Needs root (CAP_SYS_ADMIN); call
before any thread starts, before the uid drop.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

from .protections import Protection

__all__ = ["CLONE_NEWNS", "Grant", "Placement", "enter_mount_namespace", "placements"]

CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000

Grant = tuple[Path, bool]  # (directory, writable)
Placement = tuple[Path, Path, bool]  # (directory, where the worker reaches it, writable)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def placements(grants: Sequence[Grant], mount_root: Path | None) -> list[Placement]:
    """Where each grant is mounted: `mount_root` itself for the first grant beneath
    which it lies (the caller's own directory, mounted over itself), else
    `mount_root/grants/<n>`; without a `mount_root`, over itself."""
    placed = []
    for number, (path, writable) in enumerate(grants):
        if mount_root is None or path == mount_root:
            target = path
        else:
            target = mount_root / "grants" / str(number)
        placed.append((path, target, writable))
    # The mount root first: the other grants are mounted inside it.
    return sorted(placed, key=lambda item: item[1] != mount_root)


def _idmapped(libc: ctypes.CDLL, path: Path, target: Path, writable: bool,
              userns: int) -> str | None:
    """Mount `path` on `target`, idmapped through `userns`; the failure, or None."""
    tree = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, str(path).encode(),
                        _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        return f"open_tree: {os.strerror(ctypes.get_errno())}"
    try:
        flags = _MOUNT_ATTR_IDMAP | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        if not writable:
            flags |= _MOUNT_ATTR_RDONLY
        attr = _MountAttr(flags, 0, 0, userns)
        if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            return f"this filesystem cannot be idmapped ({os.strerror(ctypes.get_errno())})"
        if libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, str(target).encode(),
                        _MOVE_MOUNT_F_EMPTY_PATH) != 0:
            return f"move_mount: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(tree)
    return None


def enter_mount_namespace(grants: Sequence[Grant], userns: int | None,
                          mount_root: Path | None = None
                          ) -> tuple[list[Protection], dict[Path, Path]]:
    """Unshare the mount namespace, make it private and, with `userns` (from
    `identity.idmap_namespace`), idmap every grant (see `placements`: the directories
    above a grant may be closed to the worker's uid, so grants are mounted inside
    `mount_root`, a directory of the caller's that is itself a grant).

    Returns the report ("mount namespace", and "grant <path>" per directory that could
    not be mapped) and where each mapped grant is reached now.
    """
    name = "mount namespace"
    if os.geteuid() != 0:
        return [Protection(name, False, "needs root (CAP_SYS_ADMIN) to unshare mounts")], {}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.unshare(CLONE_NEWNS) != 0:
        return [Protection(name, False, f"unshare(CLONE_NEWNS): "
                           f"{os.strerror(ctypes.get_errno())}")], {}
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return [Protection(name, False, f"cannot make / private: "
                           f"{os.strerror(ctypes.get_errno())}")], {}
    report = []
    reached: dict[Path, Path] = {}
    if userns is not None:
        placed = placements(grants, mount_root)
        for _, target, _ in placed:  # mount points, made before the root is idmapped
            if not target.exists():
                try:
                    target.mkdir(mode=0o700, parents=True)
                except OSError as exc:
                    report.append(Protection(f"grant {target}", False, exc.strerror or ""))
        for path, target, writable in placed:
            failure = _idmapped(libc, path, target, writable, userns)
            if failure is None:
                reached[path] = target
            else:
                report.append(Protection(f"grant {path}", False, f"{failure}: the worker "
                                         "reaches it with the permissions of others only"))
    detail = "private"
    if reached:
        detail += "; idmapped: " + ", ".join(
            f"{path} ({'rw' if writable else 'ro'})" for path, writable in grants
            if path in reached)
    return [Protection(name, True, detail), *report], reached

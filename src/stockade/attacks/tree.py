"""Measure and remove directory trees a guest made, however deep or long their paths.

A guest can nest directories far past PATH_MAX or Python's recursion limit, so both
walks here go one level at a time through directory descriptors (`dir_fd`), never by
full path and never by recursion, and never follow a symlink the guest planted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeUsage", "tree_usage", "remove_tree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class TreeUsage:
    """What lies under a directory: entries of any kind (inodes), apparent bytes of
    regular files, bytes allocated on disk, symlinks and the deepest level."""

    inodes: int = 0
    bytes: int = 0
    allocated: int = 0
    symlinks: int = 0
    depth: int = 0


def _walk(root: Path, visit: Callable[[int, str, os.stat_result], None],
          leave: Callable[[int, str], None] | None = None) -> int:
    """Depth-first walk below `root` holding one directory descriptor at a time.

    `visit(dir_fd, name, lstat)` sees every entry; `leave(parent_fd, name)` runs after a
    directory's contents were walked. Returns the deepest level reached.
    """
    fd = os.open(root, _DIR_FLAGS)
    # per level: the names still to visit in that directory
    pending: list[list[str]] = [sorted(os.listdir(fd), reverse=True)]
    names: list[str] = []
    deepest = 0
    try:
        while pending:
            if not pending[-1]:
                pending.pop()
                if not names:
                    break
                name = names.pop()
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent
                if leave is not None:
                    leave(fd, name)
                continue
            name = pending[-1].pop()
            info = os.lstat(name, dir_fd=fd)
            visit(fd, name, info)
            if stat.S_ISDIR(info.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(sorted(os.listdir(fd), reverse=True))
                deepest = max(deepest, len(names))
    finally:
        os.close(fd)
    return deepest


def tree_usage(root: Path) -> TreeUsage:
    """Count what lies below `root` (not `root` itself). A missing root counts as empty."""
    totals = {"inodes": 0, "bytes": 0, "allocated": 0, "symlinks": 0}

    def visit(_fd: int, _name: str, info: os.stat_result) -> None:
        totals["inodes"] += 1
        totals["allocated"] += info.st_blocks * 512
        if stat.S_ISREG(info.st_mode):
            totals["bytes"] += info.st_size
        elif stat.S_ISLNK(info.st_mode):
            totals["symlinks"] += 1

    if not root.is_dir():
        return TreeUsage()
    depth = _walk(root, visit)
    return TreeUsage(depth=depth, **totals)


def remove_tree(root: Path) -> None:
    """Remove `root` and everything below it; symlinks are removed, never followed.
    A missing root is not an error."""
    if not root.is_dir() or root.is_symlink():
        if root.is_symlink() or root.exists():
            root.unlink()
        return

    def visit(fd: int, name: str, info: os.stat_result) -> None:
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=fd)
        elif not info.st_mode & stat.S_IWUSR:
            os.chmod(name, info.st_mode | stat.S_IRWXU, dir_fd=fd)

    def leave(fd: int, name: str) -> None:
        os.rmdir(name, dir_fd=fd)

    _walk(root, visit, leave)
    os.rmdir(root)

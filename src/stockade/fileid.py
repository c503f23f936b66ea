"""A file's identity: the (device, inode) pair that names it, whatever path reached it;
and `file_key`, which names one version of its contents."""

from __future__ import annotations

import os

__all__ = ["file_identity", "file_key", "path_key", "FileKey"]

FileKey = tuple[int, int, int, int, int]


def file_identity(fd: int) -> tuple[int, int]:
    """(st_dev, st_ino) of the file open as `fd`."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def file_key(info: os.stat_result) -> FileKey:
    """What names one version of a file: its identity, size and times. The change time
    too: a rewrite that restores size and mtime (`cp -p`, or written in place and its
    mtime set back) still moves it, and its owner cannot set it back."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def path_key(path: str | os.PathLike[str]) -> FileKey | None:
    """`file_key` of the file `path` leads to now; None when it cannot be stat'ed."""
    try:
        return file_key(os.stat(path))
    except OSError:
        return None

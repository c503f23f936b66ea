"""A file's identity: the (device, inode) pair that names it, whatever path reached it."""

from __future__ import annotations

import os

__all__ = ["file_identity"]


def file_identity(fd: int) -> tuple[int, int]:
    """(st_dev, st_ino) of the file open as `fd`."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino

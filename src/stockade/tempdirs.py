"""`LockedTempDir`: a temporary directory that a process killed outright does not leave behind.

A gateway's metrics directory and an isolated worker's temporary directory are removed
when their owner stops; one killed by SIGKILL or the OOM killer left them in /tmp for
good. Each holds an exclusive `flock` on its own directory for as long as its owner lives
(the kernel lets go of it when the process dies, however it dies), and whoever makes the
next one with the same prefix removes those of its user that nobody locks any more.

A directory is judged by what it is, not its name: a real directory (never a symlink)
owned by this user, unlocked, and older than `STALE_AFTER` (one just made is locked a
moment after `mkdtemp` returns), holding nothing named `kept*` (an isolated worker's
directory keeps the scratch directories its owner was asked to keep). Another user's
directories are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from pathlib import Path

from .rmtree import remove_tree

__all__ = ["LockedTempDir", "STALE_AFTER"]

STALE_AFTER = 60.0  # seconds: a younger unlocked directory may be one being made
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SWEPT_MAX = 256  # directories looked at per sweep: a full /tmp costs one bounded pass


class LockedTempDir:
    """A fresh directory `<base>/<prefix>XXXXXXXX`, locked until `close` (or the process's
    end), made after removing this user's unlocked ones of the same prefix that hold
    nothing named `kept*`."""

    def __init__(self, prefix: str, base: str | None = None, kept: str | None = None,
                 stale_after: float = STALE_AFTER) -> None:
        base = base or tempfile.gettempdir()
        remove_stale(prefix, base, kept, stale_after)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self._fd: int | None = os.open(self.path, _DIR_FLAGS)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        """Let go of the lock (the directory itself is its owner's to remove)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_stale(prefix: str, base: str, kept: str | None = None,
                 stale_after: float = STALE_AFTER) -> None:
    """Remove the directories `<base>/<prefix>*` this user owns that no process locks,
    changed over `stale_after` seconds ago and holding nothing named `kept*`. Never raises:
    a directory left is tried next time."""
    uid, now = os.getuid(), time.time()
    try:
        names = [entry.name for entry in os.scandir(base) if entry.name.startswith(prefix)]
    except OSError:
        return
    for name in names[:_SWEPT_MAX]:
        path = os.path.join(base, name)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            continue  # gone, a symlink, not a directory or not ours to open
        try:
            info = os.fstat(fd)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid \
                    or now - info.st_ctime < stale_after:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its owner lives
            # Removed while locked, so that no one makes use of it meanwhile; by its
            # identity, checked again on the path `remove_tree` walks.
            with contextlib.suppress(OSError):
                if kept is not None and any(name.startswith(kept) for name in os.listdir(fd)):
                    continue
                if os.lstat(path).st_ino == info.st_ino:
                    remove_tree(Path(path))
        finally:
            os.close(fd)

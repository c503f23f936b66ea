"""`Usage`: the running total of an AoT cache's bytes, so that a store need not walk every
entry to learn whether the cache must be trimmed (300,000 entries: 2.2 s a store).

    <root>/.usage    0600, this uid: "<total> <charged>\\n"

`total` is what the entries and records under the root are believed to occupy; `charged`
counts every byte ever charged, so a walk that ran while others stored can add what they
charged meanwhile to what it found (`settle`). Both change only under an exclusive
`flock`, so racing writers lose no charge. The file is a belief, not a bound: it may
lie (a crash between a write and its charge, a scope's worker writing it), so `AotCache`
also walks when it cannot be read, and by chance in proportion to the bytes stored.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable

from ..regularfile import lock_within, owner_problem

__all__ = ["Usage", "USAGE_NAME"]

USAGE_NAME = ".usage"
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Seconds to wait for the lock before walking without the total. Writers hold it for a
# read and a write (microseconds); a scope's worker may hold it for good, and a second
# made each host store into that scope a second longer (found by review).
_WAIT = 0.05
_MOST = 1 << 62  # a larger number is not a total but a lie


class Usage:
    """The open `.usage` file of one cache root (see the module docstring). Close it, or
    use it with `with`; closing twice is safe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wait = _WAIT  # none once the lock was not had: its holder is stuck

    @classmethod
    def open(cls, root: int) -> Usage | None:
        """The usage file in the open directory `root`, created when missing. What is
        there instead of one (not a regular file of this uid that only it can write) is
        removed and a fresh one made; None when that fails too."""
        for _ in range(2):
            try:
                fd = os.open(USAGE_NAME, _OPEN, 0o600, dir_fd=root)
            except OSError:  # ELOOP: a link in its place; EISDIR: a folder
                _remove(root)
                continue
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and not owner_problem(info):
                return cls(fd)
            os.close(fd)
            _remove(root)
        return None

    def charge(self, added: int) -> tuple[int | None, int]:
        """Add `added` bytes; (the total now, or None when the file held no total; the
        bytes charged so far, for `settle`). Returns (None, 0) when the lock is not
        had within `_WAIT` seconds (50 ms)."""
        with self._locked() as locked:
            if not locked:
                return None, 0
            total, charged = self._read()
            charged = (charged if total is not None else 0) + added
            if total is not None:
                total += added
                self._write(total, charged)
            return total, charged

    def settle(self, found: int, since: int) -> None:
        """Record `found` bytes (what a walk left, begun after `charge` returned `since`)
        plus what was charged since then."""
        with self._locked() as locked:
            if not locked:
                return
            total, charged = self._read()
            # Charged meanwhile: counted again if the walk saw it too, never lost.
            meanwhile = charged - since if total is not None and charged >= since else 0
            self._write(found + meanwhile, charged if total is not None else 0)

    def close(self) -> None:
        """Release the file (and any lock held on it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Usage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _locked(self) -> _Lock:
        return _Lock(self._fd, self._wait, self._gave_up)

    def _gave_up(self) -> None:
        self._wait = 0.0

    def _read(self) -> tuple[int | None, int]:
        try:
            total, charged = (int(word) for word in os.pread(self._fd, 64, 0).split())
        except (OSError, ValueError):  # empty, garbled, or not two numbers
            return None, 0
        if not (0 <= total < _MOST and 0 <= charged < _MOST):
            return None, 0
        return total, charged

    def _write(self, total: int, charged: int) -> None:
        text = f"{total} {charged}\n".encode()
        try:
            os.pwrite(self._fd, text, 0)
            os.ftruncate(self._fd, len(text))
        except OSError:  # a full disk: the next store walks, as the total reads wrong
            pass


class _Lock:
    """An exclusive `flock` on `fd`, waited for at most `wait` seconds (a holder that
    never lets go must not stop a store), `gave_up` called when it was not had: true
    inside `with` when it was had."""

    def __init__(self, fd: int, wait: float, gave_up: Callable[[], None]) -> None:
        self._fd = fd
        self._wait = wait
        self._gave_up = gave_up
        self._held = False

    def __enter__(self) -> bool:
        try:
            lock_within(self._fd, self._wait)
        except BlockingIOError:
            self._gave_up()
            return False
        except OSError:
            return False
        self._held = True
        return True

    def __exit__(self, *_: object) -> None:
        if self._held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False


def _remove(root: int) -> None:
    """Remove what is at `USAGE_NAME` in `root` (a file, a link, an empty folder)."""
    try:
        os.unlink(USAGE_NAME, dir_fd=root)
    except IsADirectoryError:
        try:
            os.rmdir(USAGE_NAME, dir_fd=root)
        except OSError:
            pass
    except OSError:
        pass

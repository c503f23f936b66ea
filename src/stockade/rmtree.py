"""`remove_tree`: delete a directory tree of any depth with a bounded number of descriptors.

`shutil.rmtree` recurses once per level (Python 3.11 raises `RecursionError` near 1,000
levels) and holds one descriptor per level (a worker with a small `RLIMIT_NOFILE` runs
out), and `ignore_errors=True` then hides what was left. A guest can make such a tree
in a writable directory within its file quota. Here the walk is a loop: it holds the
descriptor of the directory it is in (plus one while moving), and remembers only names
and identities of the levels above. It never follows a symlink, never crosses into
another filesystem or a bind mount (a mount point is left and reported, its contents
untouched: mount points are told by device and by `/proc/self/mountinfo`), makes
a directory it cannot enter or empty writable and retries once, and at the end checks
that the tree is gone. Whatever is left is reported in one line, never raised.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .fileid import file_identity

__all__ = ["remove_tree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SHOWN_LEVELS = 4  # path components named in a report; the depth says the rest


class _Level:
    """A directory being emptied: its name in its parent, its identity, names to skip."""

    __slots__ = ("name", "ident", "skip")

    def __init__(self, name: str, ident: tuple[int, int], skip: set[str] | None = None) -> None:
        self.name = name
        self.ident = ident
        self.skip: set[str] = set() if skip is None else skip


class _Failures:
    """What could not be removed: how many entries, and the first one's reason."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first = ""

    def add(self, stack: list[_Level], name: str, reason: str) -> None:
        self.count += 1
        if not self.first:
            names = [level.name for level in stack[1:]] + [name]
            shown = "/".join(names[-_SHOWN_LEVELS:])
            if len(names) > _SHOWN_LEVELS:
                shown = f".../{shown} (depth {len(names)})"
            self.first = f"{shown}: {reason}"


def _unescape(field: bytes) -> str:
    """A mountinfo path: octal escapes (\\040 for a space) undone, bytes as the file
    system has them. No codec lookup: a confined worker cannot import one any more."""
    parts = field.split(b"\\")
    raw = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 3 and all(48 <= c <= 55 for c in part[:3]):
            raw.append(int(part[:3], 8))
            raw += part[3:]
        else:
            raw += b"\\" + part
    return os.fsdecode(bytes(raw))


def _mounts_under(path: Path) -> set[tuple[int, int]]:
    """Identities of the mount points strictly below `path` (a bind mount of the same
    filesystem keeps its device number: only the mount table tells it apart)."""
    try:
        table = Path("/proc/self/mountinfo").read_bytes()
    except OSError:
        return set()
    prefix = str(path).rstrip("/") + "/"
    found = set()
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point.startswith(prefix):
            try:
                info = os.lstat(point)
            except OSError:
                continue
            found.add((info.st_dev, info.st_ino))
    return found


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def remove_tree(path: Path | str) -> str | None:
    """Remove the directory `path` and everything under it, however deep.

    Returns None when `path` is gone afterwards (or never existed), else one line saying
    what was left under `path` and why (e.g. an immutable file or a mount point inside
    it). Never raises for what it finds in the tree; the caller reports the line. Meant
    for trees nobody writes to any more (a stopped guest's directory).
    """
    path = Path(path)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot open its parent directory: {_reason(exc)}"
    try:
        failures = _remove_at(parent, path.name, _mounts_under(Path(os.path.realpath(path))))
    finally:
        os.close(parent)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot check that it was removed: {_reason(exc)}"
    if failures.count:
        entries = "entry" if failures.count == 1 else "entries"
        return (f"{path}: {failures.count} {entries} could not be removed "
                f"(first: {failures.first})")
    return f"{path}: still present after removal"


def _remove_at(parent: int, name: str, mounts: set[tuple[int, int]]) -> _Failures:
    failures = _Failures()
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return failures
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            _unlink(parent, name, [], failures)  # a file or symlink: remove that alone
        else:
            failures.add([], name, _reason(exc))
        return failures
    device = os.fstat(top).st_dev
    stack = [_Level(name, file_identity(top))]
    current = top
    try:
        while stack:
            level = stack[-1]
            child = _empty_files(current, stack, failures)
            if child is not None:
                entered = _enter(current, child, device, mounts, stack, failures)
                if entered is None:
                    level.skip.add(child)
                    continue
                stack.append(_Level(child, file_identity(entered)))
                os.close(current)
                current = entered
                continue
            stack.pop()
            if not stack:
                break
            up = os.open("..", _DIR_FLAGS, dir_fd=current)
            if file_identity(up) != stack[-1].ident:
                # Something moved this tree while it was being removed: stop here
                # rather than delete anything outside it.
                os.close(up)
                failures.add(stack, level.name, "the tree was moved during removal")
                return failures
            os.close(current)
            current = up
            left = failures.count
            if not _unlink(current, level.name, stack, failures, directory=True):
                stack[-1].skip.add(level.name)
                if left:  # already reported by what kept it from being empty
                    failures.count -= 1
    except OSError as exc:  # the walk itself failed (EMFILE, EIO): report, do not raise
        failures.add(stack, "", _reason(exc))
        return failures
    finally:
        os.close(current)
    left = failures.count
    if not _unlink(parent, name, [], failures, directory=True) and left:
        failures.count -= 1
    return failures


def _empty_files(fd: int, stack: list[_Level], failures: _Failures) -> str | None:
    """Unlink every non-directory in `fd`; the first subdirectory not skipped, or None."""
    level = stack[-1]
    with os.scandir(fd) as entries:  # scandir works on a duplicate: one more fd, briefly
        for entry in entries:
            if entry.name in level.skip:
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                return entry.name
            if not _unlink(fd, entry.name, stack, failures):
                level.skip.add(entry.name)
    return None


def _unlink(fd: int, name: str, stack: list[_Level], failures: _Failures,
            directory: bool = False) -> bool:
    """Unlink one entry (rmdir an empty `directory`); on EACCES make the directory `fd`
    writable and retry once. False, recorded in `failures`, when it stays."""
    for attempt in range(2):
        try:
            if directory:
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            return True
        except FileNotFoundError:
            return True
        except PermissionError as exc:
            if attempt == 0 and exc.errno == errno.EACCES:
                try:
                    os.fchmod(fd, stat.S_IRWXU)
                    continue
                except OSError:
                    pass
            failures.add(stack, name, _reason(exc))
            return False
        except OSError as exc:
            failures.add(stack, name, _reason(exc))
            return False
    return False


def _enter(fd: int, name: str, device: int, mounts: set[tuple[int, int]],
           stack: list[_Level], failures: _Failures) -> int | None:
    """Open subdirectory `name` of `fd` without following links; None when it cannot be
    entered (recorded in `failures`) or is on another filesystem (a mount point)."""
    for attempt in range(2):
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except PermissionError as exc:
            if attempt == 0:
                try:  # a directory left without r/x: make it ours again, never via a link
                    os.chmod(name, stat.S_IRWXU, dir_fd=fd, follow_symlinks=False)
                    continue
                except (OSError, ValueError, NotImplementedError):
                    pass
            failures.add(stack, name, _reason(exc))
            return None
        except OSError as exc:
            failures.add(stack, name, _reason(exc))
            return None
        info = os.fstat(child)
        if info.st_dev != device or (info.st_dev, info.st_ino) in mounts:
            os.close(child)
            failures.add(stack, name, "a mount point (left in place, not entered)")
            return None
        return child
    return None

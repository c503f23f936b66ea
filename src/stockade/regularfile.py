"""Files in the state directory that whoever can write it may have planted or replaced.

`open_regular` never follows a symlink (a link planted as the telemetry file made runs
append to a file of the attacker's choosing) nor blocks on a FIFO (one planted as a file
hung every run), and refuses anything but a regular file. `append_lines` appends all of
its bytes or none: a short write on a full disk left half a record, which the audit
log's next append took for tampering and `verify` for a broken chain, for good.
`lock_within` waits a bounded time for a file's lock: a holder that never lets go (a
hostile worker sharing the file) must not stop the caller for good.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError

__all__ = ["open_regular", "append_lines", "read_regular", "replace_file", "replaceable",
           "private_dir", "not_private", "owner_problem", "lock_within", "ROOT_OWNED"]


def open_regular(path: Path | str, flags: int, mode: int = 0o600, *,
                 follow: bool = False) -> int:
    """`os.open` with O_NOFOLLOW (unless `follow`: a path a user named)|O_NONBLOCK|
    O_CLOEXEC, refusing anything but a regular file (OSError EINVAL naming the file).
    Reads and writes on it then block as usual."""
    nofollow = 0 if follow else os.O_NOFOLLOW
    fd = os.open(path, flags | nofollow | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (refused)", str(path))
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path | str, limit: int, *, follow: bool = False,
                 vet: Callable[[os.stat_result], None] | None = None) -> bytes:
    """At most `limit` bytes of the regular file at `path` (`open_regular`). `vet`, when
    given, is shown the opened file's status (`fstat`) before a byte is read, and raises
    to refuse it: the file judged is the one read, whatever its path names by then."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    try:
        if vet is not None:
            vet(os.fstat(fd))
        chunks = []
        while limit > 0 and (chunk := os.read(fd, min(limit, 1 << 20))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def append_lines(fd: int, data: bytes) -> None:
    """Append the whole lines `data` to `fd` (opened O_APPEND and for reading, under an
    exclusive lock its writers share): all of it, or the file is cut back to where it
    ended and OSError is raised (ENOSPC for a write the disk stopped short). A file whose
    last line was cut (by hand, or a crash) gets a newline first: the lines appended to
    it were read as part of that damaged one, and lost with it."""
    end = os.fstat(fd).st_size
    if end and os.pread(fd, 1, end - 1) != b"\n":
        data = b"\n" + data
    written = 0
    try:
        while written < len(data):
            count = os.write(fd, data[written:])
            if count == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += count
    except BaseException:
        if written:
            os.ftruncate(fd, end)
        raise


def lock_within(fd: int, seconds: float) -> None:
    """Take `fd`'s exclusive `flock`, waiting `seconds` at most (0: one try). Raises
    BlockingIOError (EAGAIN) when another holds it that long, OSError when it cannot be
    taken at all."""
    deadline = time.monotonic() + seconds
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BlockingIOError(errno.EAGAIN, f"its lock was held elsewhere for "
                                      f"{seconds:g} s") from None
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.05)


def replaceable(path: Path) -> os.stat_result | None:
    """What `replace_file` would replace at `path` (its lstat), None when nothing is
    there; for a command to refuse before its work rather than after. Raises OSError for
    anything there but a regular file (a device, a symlink such as /dev/stdout)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(found.st_mode):
        raise OSError(errno.EINVAL, "exists and is not a regular file (refused)", str(path))
    return found


def replace_file(path: Path, data: bytes, mode: int | None = 0o600, *,
                 others_write: bool = True) -> None:
    """Put `data` at `path` whole: written to a new file of a name no one can guess beside
    it (a link planted at a predictable `.NAME.PID.tmp` had the write go through it),
    then renamed over `path`. A `path` that exists as anything but a regular file (a
    device, a symlink such as /dev/stdout) is refused: as root, the rename replaced
    /dev/full with a file. `mode` None: the mode of the file replaced, else what the
    umask leaves of 0666 (a user's output, as `cp` would write it). `others_write` False:
    never writable by group or others, whatever the umask or the mode replaced (a
    manifest or policy so writable is refused when read). Raises OSError."""
    import contextlib
    import tempfile

    found = replaceable(path)
    if mode is None:
        mode = 0o666 & ~_umask() if found is None else stat.S_IMODE(found.st_mode)
    if not others_write:
        mode &= ~0o022
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                                         dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    """This process's umask, read without changing it (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def private_dir(directory: Path) -> None:
    """Create `directory` 0700 when missing; refuse (UsageError) one owned by another uid
    or writable by group or others: whoever can write it can replace the files kept
    there (the audit log, the telemetry file)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = not_private(directory)
    if problem:
        raise UsageError(problem)


def not_private(directory: Path) -> str:
    """Why `private_dir` refuses the existing `directory`, or "" (one `stat`)."""
    problem = owner_problem(os.stat(directory))
    if not problem:
        return ""
    fix = "" if problem.startswith("owned") else " (chmod 700 it)"
    return f"state directory {directory}: {problem}: refused{fix}"


# Root can replace any file anyway: its files are as good as the user's (trust keys,
# policies, manifests; not what this user writes, such as a cache or a store).
ROOT_OWNED = (0,)


def owner_problem(info: os.stat_result, owners: tuple[int, ...] = ()) -> str:
    """Why a file or directory with status `info` is one another user could have written,
    or "": owned by a uid other than this user's (and `owners`'), or writable by group or
    others (the mode, and which of them). The rule of the state directory (`not_private`),
    the local image store and trust keys."""
    if info.st_uid != os.geteuid() and info.st_uid not in owners:
        return f"owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    writable = info.st_mode & 0o022
    if not writable:
        return ""
    who = {0o020: "its group", 0o002: "others"}.get(writable, "group and others")
    # Writing a directory replaces the files in it; writing a file, what it holds.
    what = "its files" if stat.S_ISDIR(info.st_mode) else "it"
    return (f"mode {stat.S_IMODE(info.st_mode):04o} lets others replace {what} "
            f"(writable by {who})")

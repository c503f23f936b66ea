"""Stockade's own host descriptors behind the guest's: what file facts are decided on.

Quotas and file-type checks must be decided on the directory wasmtime really holds, not
on a host path remembered when it was opened: after ``mkdir d; D=open(d); rename d e;
mkdir d`` the path ``d`` names another directory than ``D``. wasmtime-py does not expose
the host descriptor behind a guest one, so Stockade keeps its own:

- each preopen is opened once with ``O_PATH|O_DIRECTORY`` from the host path the policy
  granted;
- when the guest opens a directory, Stockade re-resolves the guest's path relative to
  its own descriptor of the parent with ``openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)``
  (Linux 5.6+), the resolution wasmtime (cap-std) itself uses, and checks that both name
  the same inode: wasmtime's ``fd_filestat_get`` reports ``ino`` as its metadata hash,
  SipHash-1-3 with zero keys over the host ``st_dev`` and ``st_ino``, which
  `metadata_hash` recomputes. A rename later moves the inode, and both descriptors with
  it.

Files of writable preopens get one the same way, so that a write, a resize or an
allocation is charged by the apparent size it adds (``fstat`` before and after), and
wasmtime is asked once per open, not once per write. Files of read-only preopens get
none: nothing is charged there.

Reading wasmtime's own descriptors from ``/proc/self/fd`` was the other way: it needs a
before/after diff of the whole table on every open, which other threads of the process
(gateway workers) change at the same time, and cannot tell two descriptors of one file
apart.

What remains: the lookup and wasmtime's open are two resolutions of one path. The guest
cannot change anything between them (its host calls run one at a time: wasi-threads is
refused), and the identity check after the open catches anyone else who did; but a FIFO
that another process renames into place in that window blocks that one open.

Symlinks the guest makes may not climb at all: a target that is absolute or has a
``..`` component anywhere is refused with ``EPERM``. The invariant is "no symlink in a
preopen resolves outside it", for host tools that follow links after the run. A link
allowed to climb to its preopen's root from where it is made (``a/a/root -> ../..``)
escapes as soon as its directory moves upward (``rename a/a top``), and checking each
directory rename would mean walking the moved tree for links, or remembering which runs
made climbing ones (a later run, or another sandbox sharing the directory, would not
know). A link that never names anything above its own directory stays inside whatever
directory it is moved into, with no check at rename time. Renaming or hard-linking a
symlink itself is still checked (`symlink_ascent`, `ascent_escapes`): links the host
placed in a preopen may climb. What remains: a guest may move a directory holding such
a host-placed climbing link upward; those links are the operator's to avoid.

Lookups never leave the preopen: ``RESOLVE_BENEATH`` refuses an absolute path or a
``..`` above the directory before the kernel looks anything up outside it, and
``O_PATH`` never opens the file itself (a FIFO cannot block, a device driver never
runs).
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FdEntry", "Descriptors", "lookup", "open_beneath", "metadata_hash",
           "symlink_ascent", "climbs", "ascent_escapes", "is_special", "split_parent"]

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (added in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: bytes, flags: int) -> int:
    """openat2 beneath `dirfd`; raises OSError (EXDEV for a path leaving `dirfd`)."""
    if b"\0" in path:
        raise OSError(22, "embedded NUL in path")
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd: int = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return fd


def lookup(dirfd: int, path: bytes, follow: bool) -> os.stat_result | None:
    """What `path` names beneath `dirfd` (None when it does not exist), without opening
    it. Raises OSError for any other failure (escapes, loops, names too long)."""
    try:
        fd = _openat2(dirfd, path or b".", _PATH_FLAGS | (0 if follow else os.O_NOFOLLOW))
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def open_beneath(dirfd: int, path: bytes, follow: bool = True, directory: bool = True) -> int:
    """An O_PATH descriptor of `path` beneath `dirfd` (a directory unless told
    otherwise); raises OSError."""
    flags = _PATH_FLAGS | (os.O_DIRECTORY if directory else 0) | (0 if follow else os.O_NOFOLLOW)
    return _openat2(dirfd, path or b".", flags)


def is_special(mode: int) -> bool:
    """Devices, FIFOs and sockets: opening them can block or reach the host."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


@dataclass
class FdEntry:
    """A descriptor the guest holds: whether it lies in a writable preopen, whether it
    is a directory, and Stockade's own O_PATH descriptor of the same inode (`host`: kept
    for directories, and for files of writable preopens, whose sizes are charged)."""

    writable: bool
    is_dir: bool = False
    host: int | None = None

    def close(self) -> None:
        """Close Stockade's own descriptor. Safe twice."""
        if self.host is not None:
            os.close(self.host)
            self.host = None


class Descriptors(dict[int, FdEntry]):
    """Guest descriptor -> `FdEntry`; preopens get 3, 4, ... in order, as in wasmtime."""

    def __init__(self, preopens: list[tuple[Path, bool]]) -> None:
        super().__init__()
        self.roots: set[tuple[int, int]] = set()
        try:
            for index, (host, writable) in enumerate(preopens):
                fd = os.open(host, _PATH_FLAGS | os.O_DIRECTORY)
                self[3 + index] = FdEntry(writable, is_dir=True, host=fd)
                info = os.fstat(fd)
                self.roots.add((info.st_dev, info.st_ino))
        except BaseException:  # EMFILE halfway: those opened were kept for good (review)
            self.close()
            raise

    def put(self, fd: int, entry: FdEntry | None) -> None:
        """Record `entry` at `fd` (None: forget it), closing what `fd` held before."""
        old = self.pop(fd, None)
        if old is not None and old is not entry:
            old.close()
        if entry is not None:
            self[fd] = entry

    def held(self) -> int:
        """Host descriptors behind the guest's: wasmtime's one each, plus Stockade's own."""
        return len(self) + sum(entry.host is not None for entry in self.values())

    def close(self) -> None:
        """Close every descriptor Stockade holds. Safe twice."""
        for entry in self.values():
            entry.close()
        self.clear()


# -- identity: wasmtime's inode numbers ------------------------------------------------

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    return v0, v1, _rotl(v2, 32), v3


def metadata_hash(dev: int, ino: int) -> int:
    """The ``ino`` wasmtime reports for a host file: SipHash-1-3 with zero keys over
    `dev` and `ino` as little-endian u64s (Rust's DefaultHasher, as wasmtime-wasi's
    metadata hash uses it)."""
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573
    for block in (dev & _M64, ino & _M64, 16 << 56):  # two words, then the length block
        v3 ^= block
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= block
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


# -- symlinks ----------------------------------------------------------------------------

MAX_ASCENT = 64  # `..` levels a guest-made symlink may climb (ordinary links use a few)


def symlink_ascent(target: bytes) -> int | None:
    """How many directories a relative symlink target climbs before naming anything
    (its leading ``..`` components); None when it is absolute, climbs more than
    MAX_ASCENT, or has a ``..`` after a name (``a/..`` means the parent of whatever
    ``a`` resolves to, which no lexical check can bound when ``a`` is a symlink)."""
    if target.startswith(b"/"):
        return None
    ascent, named = 0, False
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if named:
                return None
            ascent += 1
        else:
            named = True
    return ascent if ascent <= MAX_ASCENT else None


def climbs(target: bytes) -> bool:
    """Whether a symlink target names anything above the link's own directory: it is
    absolute or has a ``..`` component anywhere. Scanned in place, never split."""
    return target.startswith(b"/") or re.search(rb"(?:^|/)\.\.(?:/|$)", target) is not None


def ascent_escapes(dirfd: int, levels: int, roots: set[tuple[int, int]]) -> bool:
    """Whether climbing `levels` directories up from `dirfd` leaves every preopen: true
    when a preopen root (or the filesystem root) is met before the last step."""
    fd = os.dup(dirfd)
    try:
        for _ in range(levels):
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) in roots:
                return True
            parent = os.open(b"..", _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            above = os.fstat(fd)
            if (above.st_dev, above.st_ino) == (info.st_dev, info.st_ino):
                return True  # the filesystem root is its own parent
        return False
    finally:
        os.close(fd)


def split_parent(path: bytes) -> tuple[bytes, bytes]:
    """(directory part, last component) of a guest path, lexically."""
    path = path.rstrip(b"/")
    head, _, tail = path.rpartition(b"/")
    return (head or (b"/" if path.startswith(b"/") else b".")), tail


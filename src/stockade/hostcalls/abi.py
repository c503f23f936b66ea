"""WASI preview 1 facts Stockade needs: import names, signatures, constants, memory access."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator

__all__ = [
    "MODULE",
    "PREVIEW1_FUNCTIONS",
    "INTERPOSED",
    "PATH_CHECKED",
    "SHADOWED",
    "Errno",
    "OFLAG_CREAT",
    "FDFLAGS_SYNC_MASK",
    "GuestMemory",
    "MAX_IOVECS",
    "MAX_IO_BYTES",
    "PATH_MAX",
    "path_too_long",
]

MODULE = "wasi_snapshot_preview1"

# Every function of wasi_snapshot_preview1. The four sock_* calls act only on sockets
# the host hands over; Stockade hands none, so they fail with EBADF in the guest.
PREVIEW1_FUNCTIONS = frozenset(
    """args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
    fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
    fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread
    fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync
    fd_tell fd_write path_create_directory path_filestat_get path_filestat_set_times path_link
    path_open path_readlink path_remove_directory path_rename path_symlink path_unlink_file
    poll_oneoff proc_exit proc_raise sched_yield random_get sock_accept sock_recv sock_send
    sock_shutdown""".split()
)

I32, I64 = "i32", "i64"
# The calls Stockade owns (those that cost the host): name -> parameter types. All return i32.
INTERPOSED: dict[str, tuple[str, ...]] = {
    "fd_read": (I32, I32, I32, I32),
    "fd_pread": (I32, I32, I32, I64, I32),
    "fd_write": (I32, I32, I32, I32),
    "fd_pwrite": (I32, I32, I32, I64, I32),
    "fd_readdir": (I32, I32, I32, I64, I32),
    "fd_close": (I32,),
    "fd_renumber": (I32, I32),
    "fd_sync": (I32,),
    "fd_datasync": (I32,),
    "fd_fdstat_set_flags": (I32, I32),
    "fd_allocate": (I32, I64, I64),
    "fd_filestat_set_size": (I32, I64),
    "path_open": (I32, I32, I32, I32, I32, I64, I64, I32, I32),
    "path_create_directory": (I32, I32, I32),
    "path_symlink": (I32, I32, I32, I32, I32),
    "path_link": (I32, I32, I32, I32, I32, I32, I32),
    "path_rename": (I32, I32, I32, I32, I32, I32),
    "path_unlink_file": (I32, I32, I32),
    "path_remove_directory": (I32, I32, I32),
    "poll_oneoff": (I32, I32, I32, I32),
    "random_get": (I32, I32),
    # No sockets are handed over, so these fail with EBADF; counted so a flood of them
    # still meets the host-call budget.
    "sock_accept": (I32, I32, I32),
    "sock_recv": (I32, I32, I32, I32, I32, I32),
    "sock_send": (I32, I32, I32, I32, I32),
    "sock_shutdown": (I32, I32),
}

# Path calls left to wasmtime (not counted, not capped: counting them would meter every
# module importing them under a host-call budget), shadowed only to refuse a path past
# PATH_MAX before wasmtime copies it: it held two to three copies of a guest's path.
PATH_CHECKED: dict[str, tuple[str, ...]] = {
    "path_filestat_get": (I32, I32, I32, I32, I32),
    "path_readlink": (I32, I32, I32, I32, I32, I32),
    "path_filestat_set_times": (I32, I32, I32, I32, I64, I64, I32),
}
# Every call a metered linker shadows.
SHADOWED: dict[str, tuple[str, ...]] = {**INTERPOSED, **PATH_CHECKED}


class Errno:
    """WASI errno values used by Stockade's host calls."""

    SUCCESS = 0
    ACCES = 2
    BADF = 8
    FAULT = 21
    INVAL = 28
    NAMETOOLONG = 37
    NOTSUP = 58
    PERM = 63


# The most iovecs one fd_read/fd_write may pass (Linux and wasi-libc IOV_MAX): beyond it
# the call fails with EINVAL, as writev(2) does, before any of them is looked at.
MAX_IOVECS = 1024
# The most bytes one owned read or write copies (a short read or write beyond: WASI lets
# the guest retry), so no single host call is proportional to the guest's memory.
MAX_IO_BYTES = 4 * 1024**2

# The longest path (or symlink target) an owned call reads, as Linux's PATH_MAX counts
# it (with its NUL): a longer one is refused with ENAMETOOLONG before it is copied.
PATH_MAX = 4096


def path_too_long(length: int) -> bool:
    """Whether a guest path length (an i32 argument, read as unsigned) is past PATH_MAX."""
    return length & 0xFFFFFFFF >= PATH_MAX


OFLAG_CREAT = 1
# fdflags dsync | rsync | sync: every write would reach the device.
FDFLAGS_SYNC_MASK = 2 | 8 | 16


class GuestMemory:
    """Bounds-checked access to a guest's linear memory during one host call: `size`
    bytes at address `base`, as the backend read them for this call (memory may move
    when it grows, so never keep one across calls).

    Raises IndexError for an access outside memory (the caller answers EFAULT).
    """

    __slots__ = ("_base", "_size")

    def __init__(self, base: int, size: int) -> None:
        self._base = base
        self._size = size

    def holds(self, offset: int, length: int) -> bool:
        """Whether `length` bytes at `offset` lie inside memory."""
        return 0 <= offset and 0 <= length and offset + length <= self._size

    def _check(self, offset: int, length: int) -> int:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise IndexError("guest memory access out of bounds")
        return self._base + offset

    def read(self, offset: int, length: int) -> bytes:
        """Copy `length` bytes at `offset`."""
        return ctypes.string_at(self._check(offset, length), length)

    def write(self, offset: int, data: bytes) -> None:
        """Store `data` at `offset`."""
        ctypes.memmove(self._check(offset, len(data)), data, len(data))

    def u32(self, offset: int) -> int:
        """Read a little-endian u32."""
        value: int = struct.unpack("<I", self.read(offset, 4))[0]
        return value

    def put_u32(self, offset: int, value: int) -> None:
        """Write a little-endian u32."""
        self.write(offset, struct.pack("<I", value))

    def iovecs(self, offset: int, count: int) -> Iterator[tuple[int, int]]:
        """The (buffer, length) pairs of an iovec array of at most `MAX_IOVECS` entries,
        read once and walked lazily. Raises ValueError past `MAX_IOVECS` (EINVAL) and
        IndexError for an array outside memory."""
        if count & 0xFFFFFFFF > MAX_IOVECS:
            raise ValueError(f"{count} iovecs (at most {MAX_IOVECS})")
        return struct.iter_unpack("<II", self.read(offset, 8 * count))

    def first_buffer(self, offset: int, count: int) -> tuple[int, int, int] | None:
        """(index, buffer, length) of the first non-empty iovec, or None: the only one
        wasmtime's WASI reads or writes for a file."""
        for index, (buf, length) in enumerate(self.iovecs(offset, count)):
            if length:
                return index, buf, length
        return None

    def path(self, offset: int, length: int) -> str:
        """A guest path argument, decoded leniently."""
        return self.read(offset, length).decode("utf-8", "replace")

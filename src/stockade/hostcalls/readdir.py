"""The owned `fd_readdir`: a directory listed from the position the guest's cookie
names, as far as the guest's buffer reaches, and no further.

wasmtime's own `fd_readdir` reads the whole directory on every call and skips `cookie`
entries: a guest calling it with a tiny buffer on a directory of 100,000 entries cost
seconds and a hundred MiB of host memory per call. Here the cookie is the position the
kernel gives each entry (`d_off`, what `telldir` returns), so a call seeks straight to
it and reads at most one entry per 24 bytes of the guest's buffer (plus one, cut short
at its end): host work and memory are bounded by the buffer, whatever the directory
holds. Cookies are opaque in WASI; 0 is the start.

A buffer of megabytes still holds a hundred thousand entries, each stat-ed and hashed
here (about a second): the caller's `checkpoint` runs every `CHECK_EVERY` entries, so
the run's deadline (or a cancel) stops the guest inside one call too. What one call
returns is not capped: a short answer would tell the guest the directory ended.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable

from .descriptors import metadata_hash

__all__ = ["listing", "DIRENT_SIZE", "CHECK_EVERY"]

DIRENT_SIZE = 24  # WASI dirent: d_next u64, d_ino u64, d_namlen u32, d_type u8, padding
_DIRENT = struct.Struct("<QQIB3x")
# DT_* -> WASI filetype (unknown 0, block 1, char 2, directory 3, regular 4, symlink 7;
# sockets as socket_stream 6; FIFOs unknown, as wasmtime reports them).
_FILETYPES = {6: 1, 2: 2, 4: 3, 8: 4, 10: 7, 12: 6}
# Entries listed between two checkpoints (a few milliseconds of stat and hash).
CHECK_EVERY = 1024


class _Dirent(ctypes.Structure):
    """glibc's `struct dirent` on Linux (64-bit)."""

    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_uint16), ("d_type", ctypes.c_uint8),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fdopendir.restype = ctypes.c_void_p
_libc.fdopendir.argtypes = [ctypes.c_int]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.seekdir.restype = None
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.restype = ctypes.c_int
_libc.closedir.argtypes = [ctypes.c_void_p]


def listing(directory: int, cookie: int, size: int,
            checkpoint: Callable[[], None] | None = None) -> bytes:
    """WASI dirents of `directory` (Stockade's own descriptor, O_PATH is enough) from
    position `cookie`, at most `size` bytes (the last entry cut at the end, as WASI
    fills a buffer). `checkpoint` is called every `CHECK_EVERY` entries; what it raises
    ends the listing. Raises OSError."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
    stream = _libc.fdopendir(fd)
    if not stream:
        error = ctypes.get_errno()
        os.close(fd)
        raise OSError(error, os.strerror(error))
    try:
        if cookie:
            _libc.seekdir(stream, ctypes.c_long(cookie & ((1 << 63) - 1)).value)
        out = bytearray()
        listed = 0
        while len(out) < size:  # one entry per DIRENT_SIZE bytes at most, plus one
            listed += 1
            if checkpoint is not None and listed % CHECK_EVERY == 0:
                checkpoint()
            ctypes.set_errno(0)
            found = _libc.readdir(stream)
            if not found:
                error = ctypes.get_errno()
                if error:
                    raise OSError(error, os.strerror(error))
                break
            item = found.contents
            name = item.d_name
            out += _DIRENT.pack(item.d_off & ((1 << 64) - 1), _inode(fd, name, item.d_ino),
                                len(name), _FILETYPES.get(item.d_type, 0)) + name
        return bytes(out[:size])
    finally:
        _libc.closedir(stream)  # closes `fd` too


def _inode(fd: int, name: bytes, fallback: int) -> int:
    """The entry's inode number as wasmtime reports it (the metadata hash of its device
    and inode), one lstat per entry returned."""
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return fallback
    return metadata_hash(info.st_dev, info.st_ino)

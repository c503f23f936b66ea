"""The owned WASI calls, once for every backend: what each charges and how it answers.

A handler is `(meter, host, memory, *args) -> errno`: `meter` is the run's `Meter`
(budget, deadline, quotas, Stockade's own descriptors), `memory` the guest's linear
memory for this call, `host` what the backend offers: `host.forward(name, *args)` calls
wasmtime's own WASI function `name` on the guest's memory (through the per-store
*trampoline*, a tiny module importing the guest's memory and re-exporting the WASI
calls: a WASI function finds memory through its calling instance).

`serve` is the whole of one owned call (charge, then answer); a backend's binding only
finds the run's meter and the guest's memory, reads the arguments, forwards, and turns
what `serve` raises into a trap: `hostcalls.interpose` for wasmtime-py,
`engine.fastpath._metered` for the C-API fast path. No wasmtime here.
"""

from __future__ import annotations

import errno as errno_codes
import logging
import os
import stat
import struct
from collections.abc import Callable
from typing import Any, Literal, Protocol

from ..result import GuestStopped, Outcome
from . import poll, readdir
from .abi import (
    FDFLAGS_SYNC_MASK,
    MAX_IO_BYTES,
    MODULE,
    OFLAG_CREAT,
    PATH_CHECKED,
    SHADOWED,
    Errno,
    GuestMemory,
    path_too_long,
)
from .descriptors import (
    FdEntry,
    ascent_escapes,
    climbs,
    is_special,
    lookup,
    metadata_hash,
    open_beneath,
    split_parent,
    symlink_ascent,
)
from .meter import Meter

__all__ = ["Host", "Handler", "HANDLERS", "TRAMPOLINE_CALLS", "trampoline_wat", "serve",
           "stopping", "arguments"]

_log = logging.getLogger(__name__)
_U32 = (1 << 32) - 1

# Calls the trampoline also exports without Stockade owning them: questions about
# wasmtime's own descriptors (type, identity).
_QUERIES: dict[str, tuple[str, ...]] = {"fd_filestat_get": ("i32", "i32")}
TRAMPOLINE_CALLS: dict[str, tuple[str, ...]] = {**SHADOWED, **_QUERIES}


class Host(Protocol):
    """What a backend gives a handler for one call."""

    def forward(self, name: str, *args: int) -> int:
        """Call wasmtime's own WASI `name` on the guest's memory; its errno."""
        ...


Handler = Callable[..., int]


def trampoline_wat() -> str:
    """The trampoline module: imports the guest's memory as `env.memory` and every call
    of `TRAMPOLINE_CALLS` from WASI, and exports each under its own name."""
    # WASI finds memory through the calling instance's "memory" export: re-export the guest's.
    lines = ['(module (import "env" "memory" (memory 0)) (export "memory" (memory 0))']
    for name, params in TRAMPOLINE_CALLS.items():
        sig = f"(param {' '.join(params)}) (result i32)"
        lines.append(f'(import "{MODULE}" "{name}" (func ${name} {sig}))')
    for name, params in TRAMPOLINE_CALLS.items():
        sig = f"(param {' '.join(params)}) (result i32)"
        body = " ".join(f"local.get {i}" for i in range(len(params)))
        lines.append(f'(func (export "{name}") {sig} {body} call ${name})')
    return "\n".join(lines) + ")"


def arguments(slots: Any, wide: tuple[bool, ...]) -> list[int]:
    """A call's arguments from the raw value slots of an unchecked host function
    (`wasmtime_val_raw_t`): i64 where `wide` (signed), else i32 read as unsigned, as
    wasmtime reads every WASI i32 (addresses, lengths, descriptors): an address of 2 GiB
    or more read as negative would fail only after wasmtime acted on it, leaving what it
    did (a file, its bytes, a descriptor) uncharged."""
    return [slots[i].i64 if is_wide else slots[i].i32 & _U32 for i, is_wide in enumerate(wide)]


def serve(name: str, meter: Meter, host: Host, memory: Callable[[], GuestMemory],
          args: list[int]) -> int:
    """One owned call `name`: charged to `meter`, then answered by its handler with the
    guest's `memory()`. An access outside guest memory answers EFAULT. Raises
    `GuestStopped` for a limit, or whatever failed in the host: the binding passes it to
    `stopping` and stops the guest with a trap."""
    if name not in PATH_CHECKED:  # wasmtime's own calls, not counted
        meter.charge(name)
    try:
        return HANDLERS[name](meter, host, memory(), *args)
    except (IndexError, KeyError):
        return Errno.FAULT


def stopping(meter: Meter, name: str, exc: BaseException) -> str:
    """Keep what stopped the guest in `name` on the meter (the first cause wins: the trap
    the guest sees only says that it was stopped); the trap's message."""
    if meter.failure is None:
        meter.failure = exc
    return f"stockade: {name}: {exc}"


def _stdio_buffer(mem: GuestMemory, iovs: int, n: int) -> tuple[int, int] | None:
    """(buffer, length) of the one iovec a standard-stream read or write uses: the first
    non-empty one, as wasmtime's WASI and the fast path's native streams use it (so a
    writev costs the same calls of the budget on every backend); None when all are
    empty. Raises ValueError past MAX_IOVECS (EINVAL), IndexError when any iovec lies
    outside memory (EFAULT)."""
    first = None
    for buf, length in mem.iovecs(iovs, n):
        if not mem.holds(buf, length):
            raise IndexError("iovec outside guest memory")
        if first is None and length:
            first = buf, length
    return first


def _fd_write(m: Meter, c: Host, mem: GuestMemory, fd: int, iovs: int, n: int, ret: int) -> int:
    if fd in (1, 2) and m.stdio_owned[fd]:
        # Past the cap what fits is kept and the guest stops: a short write it may
        # ignore would lose the rest without a word (the native streams' rule too).
        try:
            first = _stdio_buffer(mem, iovs, n)
        except ValueError:
            return Errno.INVAL
        if not mem.holds(ret, 4):
            return Errno.FAULT  # before anything is written
        data = b""
        if first is not None:
            buf, length = first
            room = m.output_room()
            data = mem.read(buf, min(length, room, MAX_IO_BYTES))
            if length > room and room <= MAX_IO_BYTES:
                m.capture(fd, data)
                m.stop_output(fd)
        m.capture(fd, data)
        mem.put_u32(ret, len(data))
        return Errno.SUCCESS
    return _file_write(m, c, mem, "fd_write", (fd, iovs, n, ret), iovs, n)


def _fd_pwrite(m: Meter, c: Host, mem: GuestMemory, fd: int, iovs: int, n: int, off: int,
               ret: int) -> int:
    return _file_write(m, c, mem, "fd_pwrite", (fd, iovs, n, off, ret), iovs, n)


def _file_write(m: Meter, c: Host, mem: GuestMemory, name: str, args: tuple[int, ...],
                iovs: int, n: int) -> int:
    reserved: list[tuple[int, int, int] | None | Literal[False]] = [False]  # not charged

    def reserve(size: int) -> None:
        reserved[0] = _reserve_write(m, c, mem, name, args, size)

    errno, written = _forward_io(m, c, mem, name, args, iovs, n, args[-1], reserve)
    charged = reserved[0]
    if errno == Errno.SUCCESS and charged is not False:
        _settle_write(m, c, mem, charged, written)
    return errno


def _forward_io(m: Meter, c: Host, mem: GuestMemory, name: str, args: tuple[int, ...],
                iovs: int, n: int, ret: int,
                reserve: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Forward a read or write to wasmtime with its iovecs bounded first: at most
    `MAX_IOVECS` (else EINVAL), and the one buffer wasmtime uses for a file (the first
    non-empty one) cut to `MAX_IO_BYTES` for the call, then restored. `reserve` is
    called first with the bytes the call may write (the disk quota's charge).

    Returns (errno, bytes moved). The count is wasmtime's, read from `ret` right after
    the call and bounded by what was offered; it is stored at `ret` again after the
    iovec is restored, since `ret` may be that very length field."""
    try:
        first = mem.first_buffer(iovs, n)
    except ValueError:
        return Errno.INVAL, 0
    if first is None:
        return c.forward(name, *args), 0
    index, _, length = first
    take = min(length, MAX_IO_BYTES)
    if reserve is not None:
        reserve(take)
    entry = iovs + 8 * index + 4
    if take != length:
        # The guest is single-threaded and inside this call: nothing sees the shorter length.
        mem.put_u32(entry, take)
    try:
        errno = c.forward(name, *args)
        moved = min(mem.u32(ret), take) if errno == Errno.SUCCESS else 0
    finally:
        if take != length:
            mem.put_u32(entry, length)
    if errno == Errno.SUCCESS:
        mem.put_u32(ret, moved)
    return errno, moved


def _iovec_call(name: str, iovs_at: int, ret_at: int) -> Handler:
    """A read or send wasmtime answers, with `_forward_io`'s bounds: iovec array at
    argument `iovs_at` (its count next), the count the call reports at `ret_at`."""

    def handler(m: Meter, c: Host, mem: GuestMemory, *args: int) -> int:
        return _forward_io(m, c, mem, name, args, args[iovs_at], args[iovs_at + 1],
                           args[ret_at])[0]

    return handler


def _no_socket(m: Meter, c: Host, mem: GuestMemory, *args: int) -> int:
    """A sock_* call: no descriptor is a socket (the host hands none over)."""
    return Errno.BADF


def _fd_read(m: Meter, c: Host, mem: GuestMemory, fd: int, iovs: int, n: int, ret: int) -> int:
    if fd == 0 and m.stdio_owned[0]:
        try:
            first = _stdio_buffer(mem, iovs, n)
        except ValueError:
            return Errno.INVAL
        if not mem.holds(ret, 4):
            return Errno.FAULT  # before any input is consumed
        chunk = b""
        if first is not None:
            buf, length = first
            chunk = m.read_stdin(min(length, MAX_IO_BYTES))
            mem.write(buf, chunk)  # checked in memory above
        mem.put_u32(ret, len(chunk))
        return Errno.SUCCESS
    return _forward_io(m, c, mem, "fd_read", (fd, iovs, n, ret), iovs, n, ret)[0]


# -- descriptors: file facts from the descriptors wasmtime holds ------------------------
# See `descriptors` for why Stockade keeps its own descriptor of guest directories (and of
# files in writable preopens, whose growth is charged).

_FILESTAT = struct.Struct("<QQB7xQQ")  # dev, ino, filetype, nlink, size (of 64 bytes)
_FILETYPE_DIRECTORY, _FILETYPE_REGULAR = 3, 4
_LOOKUP_SYMLINK_FOLLOW = 1
_U64 = (1 << 64) - 1
_identity: list[bool] = []  # whether wasmtime's inode numbers are the metadata hash


def _filestat(m: Meter, c: Host, mem: GuestMemory, fd: int) -> tuple[int, int] | None:
    """(filetype, ino) of wasmtime's own descriptor `fd`, from its fd_filestat_get. The
    answer lands in guest memory at 0, which is put back as it was (the guest is paused
    and single-threaded); None when wasmtime answers with an errno."""
    saved = mem.read(0, _FILESTAT.size)
    try:
        if c.forward("fd_filestat_get", fd, 0) != Errno.SUCCESS:
            return None
        _dev, ino, filetype, _nlink, _size = _FILESTAT.unpack(mem.read(0, _FILESTAT.size))
        return filetype, ino
    finally:
        mem.write(0, saved)


def _same_inode(m: Meter, c: Host, mem: GuestMemory, parent_fd: int, parent: FdEntry,
                own: int, ino: int) -> bool:
    """Whether Stockade's descriptor `own` names the inode wasmtime opened (`ino`).
    The first time, the parent (whose identity is known) checks that wasmtime's inode
    numbers are still the metadata hash; if not, the re-resolution is trusted alone."""
    if not _identity and parent.host is not None:
        known = _filestat(m, c, mem, parent_fd)
        info = os.fstat(parent.host)
        _identity.append(known is not None and known[1] == metadata_hash(info.st_dev,
                                                                          info.st_ino))
        if not _identity[0]:
            _log.warning("wasmtime's inode numbers are not the expected metadata hash: "
                         "descriptor identity rests on re-resolution alone")
    if not _identity or not _identity[0]:
        return True
    info = os.fstat(own)
    return metadata_hash(info.st_dev, info.st_ino) == ino


def _path_open(m: Meter, c: Host, mem: GuestMemory, dirfd: int, dirflags: int, path: int,
               path_len: int, oflags: int, base: int, inheriting: int, fdflags: int,
               out: int) -> int:
    m.reserve_fd()
    parent = m.fds.get(dirfd)
    raw = mem.read(path, path_len)
    follow = bool(dirflags & _LOOKUP_SYMLINK_FOLLOW)
    found, escapes = None, False
    if parent is not None and parent.host is not None:
        try:
            found = lookup(parent.host, raw, follow)
        except OSError as exc:  # a loop, a bad name: wasmtime answers with its own errno
            escapes = exc.errno == errno_codes.EXDEV  # wasmtime refuses escapes too
    if found is not None and is_special(found.st_mode):
        return Errno.ACCES  # devices and FIFOs can block or reach the host
    # An unknown descriptor is wasmtime's to refuse (EBADF), a read-only preopen too
    # (EPERM): neither is charged. What such an open returns is still charged as writable.
    writable = parent is None or parent.writable
    known_writable = parent is not None and parent.writable
    creating = bool(oflags & OFLAG_CREAT) and found is None and known_writable and not escapes
    if creating:
        m.reserve_file()
    if m.limits.sync_limit() == 0:
        fdflags &= ~FDFLAGS_SYNC_MASK
    errno = c.forward("path_open", dirfd, dirflags, path, path_len, oflags, base,
                     inheriting, fdflags, out)
    if errno != Errno.SUCCESS:
        return errno
    fd = mem.u32(out)
    m.files_created += creating
    entry = FdEntry(writable)
    m.opened(fd, entry)  # recorded first, so that a refusal below closes it
    if parent is None or parent.host is None:
        return Errno.SUCCESS
    if not writable and found is not None and stat.S_ISREG(found.st_mode):
        return Errno.SUCCESS  # a file nothing is charged for: the lookup said enough
    facts = _filestat(m, c, mem, fd)
    if facts is None or facts[0] not in (_FILETYPE_DIRECTORY, _FILETYPE_REGULAR):
        _fd_close(m, c, mem, fd)  # swapped in after the lookup, from outside this run
        return Errno.ACCES
    entry.is_dir = facts[0] == _FILETYPE_DIRECTORY
    if not (entry.is_dir or writable):
        return Errno.SUCCESS
    try:
        entry.host = open_beneath(parent.host, raw, follow, directory=entry.is_dir)
    except OSError:
        entry.host = None
    if entry.host is None or not _same_inode(m, c, mem, dirfd, parent, entry.host, facts[1]):
        _fd_close(m, c, mem, fd)  # wasmtime's descriptor is not the inode Stockade sees
        return Errno.ACCES
    return Errno.SUCCESS


def _creates(name: str, fd_index: int, size_index: int | None = None) -> Handler:
    """A call creating one name in the directory argument `fd_index`: charged to the
    file quota, and the bytes argument `size_index` says it stores (a symlink's target)
    to the disk quota, except on a descriptor Stockade does not know (wasmtime answers
    EBADF) or in a read-only preopen (EPERM)."""

    def handler(m: Meter, c: Host, mem: GuestMemory, *args: int) -> int:
        parent = m.fds.get(args[fd_index])
        if parent is None or not parent.writable:
            return c.forward(name, *args)
        m.reserve_file()
        size = 0 if size_index is None else args[size_index]
        m.reserve_bytes(size)
        errno = c.forward(name, *args)
        if errno == Errno.SUCCESS:
            m.files_created += 1
            m.wrote(size)
        return errno

    return handler


# A symlink's target is data on the disk: 5,000 links of 4,000 bytes stored 20 MB under a
# 1 MiB quota (found by review).
_create_symlink = _creates("path_symlink", 2, size_index=1)
_create_link = _creates("path_link", 4)


def _link_escapes(m: Meter, directory: FdEntry | None, target: bytes, link: bytes) -> bool:
    """Whether an existing symlink to `target` moved to `link` (beneath `directory`)
    would point outside every preopen, judged from where its directory really is (the
    links the guest makes never climb; those placed by the host may)."""
    ascent = symlink_ascent(target)
    if ascent is None:
        return True
    if ascent == 0:
        return False
    if directory is None or directory.host is None:
        return True
    try:
        where = open_beneath(directory.host, split_parent(link)[0])
    except OSError:
        return True
    try:
        return ascent_escapes(where, ascent, m.fds.roots)
    finally:
        os.close(where)


def _symlink_at(directory: FdEntry | None, path: bytes) -> bytes | None:
    """The target of `path` beneath `directory` when it is a symlink."""
    if directory is None or directory.host is None:
        return None
    head, tail = split_parent(path)
    try:
        where = open_beneath(directory.host, head)
    except OSError:
        return None
    try:
        return os.readlink(tail, dir_fd=where)
    except (OSError, ValueError):
        return None
    finally:
        os.close(where)


def _path_symlink(m: Meter, c: Host, mem: GuestMemory, old: int, old_len: int, fd: int,
                  new: int, new_len: int) -> int:
    directory = m.fds.get(fd)
    if (directory is None or directory.writable) and climbs(mem.read(old, old_len)):
        return Errno.PERM  # nothing created: host tools would follow it later
    return _create_symlink(m, c, mem, old, old_len, fd, new, new_len)


def _path_link(m: Meter, c: Host, mem: GuestMemory, old_fd: int, old_flags: int, old: int,
               old_len: int, new_fd: int, new: int, new_len: int) -> int:
    if not old_flags & _LOOKUP_SYMLINK_FOLLOW:  # a hard link to a symlink moves it
        target = _symlink_at(m.fds.get(old_fd), mem.read(old, old_len))
        if target is not None and _link_escapes(m, m.fds.get(new_fd), target,
                                                mem.read(new, new_len)):
            return Errno.PERM
    return _create_link(m, c, mem, old_fd, old_flags, old, old_len, new_fd, new, new_len)


def _path_rename(m: Meter, c: Host, mem: GuestMemory, old_fd: int, old: int, old_len: int,
                 new_fd: int, new: int, new_len: int) -> int:
    target = _symlink_at(m.fds.get(old_fd), mem.read(old, old_len))
    if target is not None and _link_escapes(m, m.fds.get(new_fd), target,
                                            mem.read(new, new_len)):
        return Errno.PERM  # a climbing symlink moved higher would point outside
    return c.forward("path_rename", old_fd, old, old_len, new_fd, new, new_len)


def _charged_file(m: Meter, fd: int) -> int | None:
    """Stockade's own descriptor of guest file `fd` when its growth is charged (a file of
    a writable preopen); None for anything else, which wasmtime decides alone."""
    entry = m.fds.get(fd)
    if entry is None or entry.is_dir or not entry.writable:
        return None
    return entry.host


def _resize(name: str) -> Handler:
    """fd_filestat_set_size / fd_allocate: charged by the apparent size they add."""

    def handler(m: Meter, c: Host, mem: GuestMemory, fd: int, *sizes: int) -> int:
        own = _charged_file(m, fd)
        growth = 0
        if own is not None:
            growth = max(0, sum(size & _U64 for size in sizes) - os.fstat(own).st_size)
            m.reserve_bytes(growth)
        errno = c.forward(name, fd, *sizes)
        if errno == Errno.SUCCESS and growth:
            m.wrote(growth)
        return errno

    return handler


_fd_filestat_set_size = _resize("fd_filestat_set_size")
_fd_allocate = _resize("fd_allocate")


def _reserve_write(m: Meter, c: Host, mem: GuestMemory, name: str, args: tuple[int, ...],
                   requested: int) -> tuple[int, int, int] | None | Literal[False]:
    """Charge a file write of `requested` bytes before it happens (a pwrite's hole past
    the end of the file too); return (fd, own descriptor, size before) for
    `_settle_write`, None when charged without a file of Stockade's own, False when
    nothing is charged: in a read-only preopen, on a directory or on a descriptor
    Stockade does not know (not open, a closed or moved standard stream). wasmtime then
    refuses the write (EBADF) or sends it to a standard stream, and the guest must see
    that, not a quota it never used. (Every file wasmtime opens for the guest is known.)"""
    fd = args[0]
    entry = m.fds.get(fd)
    if entry is None or entry.is_dir or not entry.writable:
        return False
    own = _charged_file(m, fd)
    if own is None:
        m.reserve_bytes(requested)
        return None
    size = os.fstat(own).st_size
    hole = max(0, (args[3] & _U64) - size) if name == "fd_pwrite" else 0
    m.reserve_bytes(requested + hole)
    return fd, own, size


def _settle_write(m: Meter, c: Host, mem: GuestMemory, before: tuple[int, int, int] | None,
                  written: int) -> None:
    """Record `written` bytes, and the hole the write left when it started past the end
    of the file (a seek beyond it): the apparent size grew by more than was written.
    Past the quota the file is cut back to its size before the write and the guest
    stopped with `disk_quota`."""
    m.wrote(written)
    if before is None or not written:
        return
    fd, own, size = before
    hole = os.fstat(own).st_size - size - written
    if hole <= 0:
        return
    try:
        m.reserve_bytes(hole)
    except GuestStopped:
        c.forward("fd_filestat_set_size", fd, size)
        raise
    m.wrote(hole)


def _fd_close(m: Meter, c: Host, mem: GuestMemory, fd: int) -> int:
    errno = c.forward("fd_close", fd)
    if errno == Errno.SUCCESS:
        m.closed(fd)
    return errno


def _fd_renumber(m: Meter, c: Host, mem: GuestMemory, fd: int, to: int) -> int:
    errno = c.forward("fd_renumber", fd, to)
    if errno == Errno.SUCCESS:
        m.renumbered(fd, to)
    return errno


def _sync(name: str) -> Handler:
    def handler(m: Meter, c: Host, mem: GuestMemory, fd: int) -> int:
        # Only a file the guest opened can be synced: wasmtime refuses a stream (the
        # standard ones, owned or closed) and a descriptor it does not hold with EBADF,
        # and so does every backend, whatever the sync policy (no disk is reached).
        if fd not in m.fds:
            return Errno.BADF
        if m.allow_sync():
            return c.forward(name, fd)
        return Errno.SUCCESS  # policy `ignore`: the data stays in the page cache

    return handler


def _set_flags(m: Meter, c: Host, mem: GuestMemory, fd: int, flags: int) -> int:
    if m.limits.sync_limit() == 0:
        flags &= ~FDFLAGS_SYNC_MASK
    return c.forward("fd_fdstat_set_flags", fd, flags)


def _poll_oneoff(m: Meter, c: Host, mem: GuestMemory, subs: int, out: int, n: int,
                 nevents: int) -> int:
    def descriptors(parsed: poll.Poll, raw: bytes, args: tuple[int, int, int, int]) -> int:
        return _poll_descriptors(m, c, mem, args, parsed, raw)

    return poll.serve(mem, (subs, out, n, nevents), m.clock_base, m.remaining_time(),
                      descriptors, m.wake)


def _poll_descriptors(m: Meter, c: Host, mem: GuestMemory, args: tuple[int, int, int, int],
                      parsed: poll.Poll, raw: bytes) -> int:
    """Descriptor subscriptions are wasmtime's to answer: forward the call with every
    clock rewritten in place as a relative wait cut at the deadline (restored after),
    so no clock, absolute or long, outlasts the run. The sandbox's descriptors never
    block (stdio is Stockade's, files are always ready, special files are not opened),
    so the clocks are what bounds the call."""
    subs = args[0]
    remaining = m.remaining_time()
    for index, userdata, seconds in parsed.clocks:
        bounded = seconds if remaining is None else min(seconds, max(remaining, 0.0))
        mem.write(subs + index * poll.SUBSCRIPTION_SIZE, poll.relative_clock(userdata, bounded))
    try:
        errno = c.forward("poll_oneoff", *args)
    finally:
        mem.write(subs, raw)
    remaining = m.remaining_time()
    if remaining is not None and remaining <= 0:
        raise GuestStopped(Outcome.TIMEOUT, "wall-clock timeout (guest was polling)")
    return errno


def _fd_readdir(m: Meter, c: Host, mem: GuestMemory, fd: int, buf: int, size: int,
                cookie: int, used: int) -> int:
    """A directory Stockade holds is listed by `readdir.listing` (work and memory bounded
    by the guest's buffer, the deadline checked as it goes); anything else is wasmtime's
    to answer (EBADF, ENOTDIR)."""
    entry = m.fds.get(fd)
    if entry is None or not entry.is_dir or entry.host is None:
        return c.forward("fd_readdir", fd, buf, size, cookie, used)
    if not (mem.holds(buf, size) and mem.holds(used, 4)):
        return Errno.FAULT
    try:
        data = readdir.listing(entry.host, cookie, size,
                               lambda: m.check_deadline("guest was listing a directory"))
    except OSError as exc:
        return _ERRNOS.get(exc.errno or 0, Errno.INVAL)
    mem.write(buf, data)
    mem.put_u32(used, len(data))
    return Errno.SUCCESS


# Host errors a listing may meet, as WASI errnos (anything else: EINVAL).
_ERRNOS = {errno_codes.EACCES: Errno.ACCES, errno_codes.ENOENT: 44, errno_codes.ENOTDIR: 54,
           errno_codes.EIO: 29}


def _forwarding(name: str) -> Handler:
    def handler(m: Meter, c: Host, mem: GuestMemory, *args: int) -> int:
        return c.forward(name, *args)

    return handler


def _paths_bounded(handler: Handler, lengths: tuple[int, ...]) -> Handler:
    """`handler` behind a check of its path length arguments (positions `lengths`):
    ENAMETOOLONG past PATH_MAX before any path is read, whatever the descriptor."""

    def bounded(m: Meter, c: Host, mem: GuestMemory, *args: int) -> int:
        if any(path_too_long(args[index]) for index in lengths):
            return Errno.NAMETOOLONG
        return handler(m, c, mem, *args)

    return bounded


# Argument positions of the path lengths of the owned calls that take paths.
_PATH_LENGTHS: dict[str, tuple[int, ...]] = {
    "path_open": (3,), "path_create_directory": (2,), "path_symlink": (1, 4),
    "path_link": (3, 6), "path_rename": (2, 5), "path_unlink_file": (2,),
    "path_remove_directory": (2,),
    "path_filestat_get": (3,), "path_readlink": (2,), "path_filestat_set_times": (3,),
}

HANDLERS: dict[str, Handler] = {name: _forwarding(name) for name in SHADOWED}
HANDLERS.update(
    fd_write=_fd_write,
    fd_pwrite=_fd_pwrite,
    fd_read=_fd_read,
    fd_pread=_iovec_call("fd_pread", 1, 4),
    sock_accept=_no_socket,
    sock_recv=_no_socket,
    sock_send=_no_socket,
    sock_shutdown=_no_socket,
    path_open=_path_open,
    path_create_directory=_creates("path_create_directory", 0),
    path_symlink=_path_symlink,
    path_link=_path_link,
    path_rename=_path_rename,
    fd_filestat_set_size=_fd_filestat_set_size,
    fd_close=_fd_close,
    fd_renumber=_fd_renumber,
    fd_sync=_sync("fd_sync"),
    fd_datasync=_sync("fd_datasync"),
    fd_fdstat_set_flags=_set_flags,
    fd_allocate=_fd_allocate,
    poll_oneoff=_poll_oneoff,
    fd_readdir=_fd_readdir,
)
HANDLERS.update({name: _paths_bounded(HANDLERS[name], lengths)
                 for name, lengths in _PATH_LENGTHS.items()})

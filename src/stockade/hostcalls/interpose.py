"""Shadow the costly WASI calls in the linker with Stockade's own, metered versions.

Each owned call charges the run's `Meter` (budget, deadline, quotas), then either
answers itself (stdio, sleeps, ignored syncs) or forwards to wasmtime's real WASI
function. Forwarding goes through a tiny per-store *trampoline* module that imports
the guest's memory: a WASI function called straight from the host finds no caller
memory, but called from wasm code it finds the trampoline's (the guest's own).

The meter of the run is found through a thread-local: a guest runs on the thread
that called `_start`, and its host calls arrive on that same thread.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import logging
import os
import stat
import struct
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from ..result import GuestStopped, Outcome
from . import poll
from .abi import (
    FDFLAGS_SYNC_MASK,
    INTERPOSED,
    MAX_IO_BYTES,
    MODULE,
    OFLAG_CREAT,
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

__all__ = ["build_linker", "metered", "LINKER_NAME"]

LINKER_NAME = "stockade-metered"
# Calls the trampoline also exports without Stockade owning them: questions about
# wasmtime's own descriptors (type, identity).
_QUERIES: dict[str, tuple[str, ...]] = {"fd_filestat_get": ("i32", "i32")}
_TRAMPOLINE_CALLS = {**INTERPOSED, **_QUERIES}
_log = logging.getLogger(__name__)
_local = threading.local()
_trampolines: dict[int, wasmtime.Module] = {}
_trampolines_lock = threading.Lock()


class metered:  # noqa: N801 - used as a context manager like a function
    """Context manager installing `meter` for host calls made on this thread."""

    def __init__(self, meter: Meter, engine: wasmtime.Engine) -> None:
        self.meter = meter
        self.engine = engine

    def __enter__(self) -> Meter:
        _local.meter = self.meter
        _local.engine = self.engine
        return self.meter

    def __exit__(self, *exc: object) -> None:
        _local.meter = None
        _local.engine = None
        self.meter.close()


def _trampoline_wat() -> str:
    # WASI finds memory through the calling instance's "memory" export: re-export the guest's.
    lines = ['(module (import "env" "memory" (memory 0)) (export "memory" (memory 0))']
    for name, params in _TRAMPOLINE_CALLS.items():
        sig = f"(param {' '.join(params)}) (result i32)"
        lines.append(f'(import "{MODULE}" "{name}" (func ${name} {sig}))')
    for name, params in _TRAMPOLINE_CALLS.items():
        sig = f"(param {' '.join(params)}) (result i32)"
        body = " ".join(f"local.get {i}" for i in range(len(params)))
        lines.append(f'(func (export "{name}") {sig} {body} call ${name})')
    return "\n".join(lines) + ")"


def _trampoline_module(engine: wasmtime.Engine) -> wasmtime.Module:
    with _trampolines_lock:
        module = _trampolines.get(id(engine))
        if module is None:
            module = _trampolines[id(engine)] = wasmtime.Module(engine, _trampoline_wat())
        return module


class _RawCall:
    """Calls one trampoline export through the C API directly: wasmtime-py's `Func.__call__`
    re-derives the function type and boxes every argument, ~20 µs per host call."""

    __slots__ = ("_func", "_kinds", "_params_type")

    def __init__(self, func: wasmtime.Func, params: tuple[str, ...]) -> None:
        self._func = func._func
        self._kinds = [_KINDS[p] for p in params]
        self._params_type = ffi.wasmtime_val_t * len(params)

    def __call__(self, caller: Any, args: tuple[int, ...]) -> int:
        params = self._params_type()
        for index, (kind, arg) in enumerate(zip(self._kinds, args, strict=True)):
            slot: Any = params[index]
            slot.kind = kind
            if kind == _I32_KIND:
                slot.of.i32 = arg
            else:
                slot.of.i64 = arg
        result = ffi.wasmtime_val_t()
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call(caller._context(), ctypes.byref(self._func), params,
                                       len(args), ctypes.byref(result), 1, ctypes.byref(trap))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        value: int = result.of.i32
        return value


_I32_KIND = ffi.WASMTIME_I32.value
_KINDS = {"i32": _I32_KIND, "i64": ffi.WASMTIME_I64.value}


def _forward(meter: Meter, caller: Any, name: str, *args: int) -> int:
    """Call wasmtime's own WASI `name` with the guest's memory."""
    if meter.trampoline is None:
        engine: wasmtime.Engine = _local.engine
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        linker.define(caller, "env", "memory", caller["memory"])
        instance = linker.instantiate(caller, _trampoline_module(engine))
        exports = instance.exports(caller)
        funcs = {export: exports[export] for export in _TRAMPOLINE_CALLS}
        meter.trampoline = {
            export: _RawCall(func, _TRAMPOLINE_CALLS[export]) for export, func in funcs.items()
            if isinstance(func, wasmtime.Func)
        }
    call: Any = meter.trampoline[name]
    result: int = call(caller, args)
    return result


# -- handlers: (meter, caller, memory, *args) -> errno ------------------------------------

Handler = Callable[..., int]


def _fd_write(m: Meter, c: Any, mem: GuestMemory, fd: int, iovs: int, n: int, ret: int) -> int:
    if fd in (1, 2) and m.stdio_owned[fd]:
        # Walk the iovecs only as far as the room under the cap: a short write is legal
        # WASI, and a write into a full cap stops the guest.
        try:
            data, more = mem.gather(iovs, n, min(m.output_room(), MAX_IO_BYTES))
        except ValueError:
            return Errno.INVAL
        if more and not data:
            m.stop_output(fd)
        m.capture(fd, data)
        mem.put_u32(ret, len(data))
        return Errno.SUCCESS
    return _file_write(m, c, mem, "fd_write", (fd, iovs, n, ret), iovs, n)


def _fd_pwrite(m: Meter, c: Any, mem: GuestMemory, fd: int, iovs: int, n: int, off: int,
               ret: int) -> int:
    return _file_write(m, c, mem, "fd_pwrite", (fd, iovs, n, off, ret), iovs, n)


def _file_write(m: Meter, c: Any, mem: GuestMemory, name: str, args: tuple[int, ...],
                iovs: int, n: int) -> int:
    reserved: list[tuple[int, int, int] | None] = [None]

    def reserve(size: int) -> None:
        reserved[0] = _reserve_write(m, c, mem, name, args, size)

    errno, written = _forward_io(m, c, mem, name, args, iovs, n, args[-1], reserve)
    if errno == Errno.SUCCESS:
        _settle_write(m, c, mem, reserved[0], written)
    return errno


def _forward_io(m: Meter, c: Any, mem: GuestMemory, name: str, args: tuple[int, ...],
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
        return _forward(m, c, name, *args), 0
    index, _, length = first
    take = min(length, MAX_IO_BYTES)
    if reserve is not None:
        reserve(take)
    entry = iovs + 8 * index + 4
    if take != length:
        # The guest is single-threaded and inside this call: nothing sees the shorter length.
        mem.put_u32(entry, take)
    try:
        errno = _forward(m, c, name, *args)
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

    def handler(m: Meter, c: Any, mem: GuestMemory, *args: int) -> int:
        return _forward_io(m, c, mem, name, args, args[iovs_at], args[iovs_at + 1],
                           args[ret_at])[0]

    return handler


def _fd_read(m: Meter, c: Any, mem: GuestMemory, fd: int, iovs: int, n: int, ret: int) -> int:
    if fd == 0 and m.stdio_owned[0]:
        total, left = 0, MAX_IO_BYTES
        try:
            for buf, length in mem.iovecs(iovs, n):
                if not length:
                    continue
                chunk = m.read_stdin(min(length, left))
                try:
                    mem.write(buf, chunk)
                except IndexError:
                    m.unread_stdin(len(chunk))
                    raise
                total += len(chunk)
                left -= len(chunk)
                if len(chunk) < length or not left:
                    break
        except ValueError:
            return Errno.INVAL
        mem.put_u32(ret, total)
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


def _filestat(m: Meter, c: Any, mem: GuestMemory, fd: int) -> tuple[int, int] | None:
    """(filetype, ino) of wasmtime's own descriptor `fd`, from its fd_filestat_get. The
    answer lands in guest memory at 0, which is put back as it was (the guest is paused
    and single-threaded); None when wasmtime answers with an errno."""
    saved = mem.read(0, _FILESTAT.size)
    try:
        if _forward(m, c, "fd_filestat_get", fd, 0) != Errno.SUCCESS:
            return None
        _dev, ino, filetype, _nlink, _size = _FILESTAT.unpack(mem.read(0, _FILESTAT.size))
        return filetype, ino
    finally:
        mem.write(0, saved)


def _same_inode(m: Meter, c: Any, mem: GuestMemory, parent_fd: int, parent: FdEntry,
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


def _path_open(m: Meter, c: Any, mem: GuestMemory, dirfd: int, dirflags: int, path: int,
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
    errno = _forward(m, c, "path_open", dirfd, dirflags, path, path_len, oflags, base,
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


def _creates(name: str, fd_index: int) -> Handler:
    """A call creating one name in the directory argument `fd_index`: charged to the
    file quota, except on a descriptor Stockade does not know (wasmtime answers EBADF)
    or in a read-only preopen (EPERM)."""

    def handler(m: Meter, c: Any, mem: GuestMemory, *args: int) -> int:
        parent = m.fds.get(args[fd_index])
        if parent is None or not parent.writable:
            return _forward(m, c, name, *args)
        m.reserve_file()
        errno = _forward(m, c, name, *args)
        if errno == Errno.SUCCESS:
            m.files_created += 1
        return errno

    return handler


_create_symlink = _creates("path_symlink", 2)
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


def _path_symlink(m: Meter, c: Any, mem: GuestMemory, old: int, old_len: int, fd: int,
                  new: int, new_len: int) -> int:
    directory = m.fds.get(fd)
    if (directory is None or directory.writable) and climbs(mem.read(old, old_len)):
        return Errno.PERM  # nothing created: host tools would follow it later
    return _create_symlink(m, c, mem, old, old_len, fd, new, new_len)


def _path_link(m: Meter, c: Any, mem: GuestMemory, old_fd: int, old_flags: int, old: int,
               old_len: int, new_fd: int, new: int, new_len: int) -> int:
    if not old_flags & _LOOKUP_SYMLINK_FOLLOW:  # a hard link to a symlink moves it
        target = _symlink_at(m.fds.get(old_fd), mem.read(old, old_len))
        if target is not None and _link_escapes(m, m.fds.get(new_fd), target,
                                                mem.read(new, new_len)):
            return Errno.PERM
    return _create_link(m, c, mem, old_fd, old_flags, old, old_len, new_fd, new, new_len)


def _path_rename(m: Meter, c: Any, mem: GuestMemory, old_fd: int, old: int, old_len: int,
                 new_fd: int, new: int, new_len: int) -> int:
    target = _symlink_at(m.fds.get(old_fd), mem.read(old, old_len))
    if target is not None and _link_escapes(m, m.fds.get(new_fd), target,
                                            mem.read(new, new_len)):
        return Errno.PERM  # a climbing symlink moved higher would point outside
    return _forward(m, c, "path_rename", old_fd, old, old_len, new_fd, new, new_len)


def _charged_file(m: Meter, fd: int) -> int | None:
    """Stockade's own descriptor of guest file `fd` when its growth is charged (a file of
    a writable preopen); None for anything else, which wasmtime decides alone."""
    entry = m.fds.get(fd)
    if entry is None or entry.is_dir or not entry.writable:
        return None
    return entry.host


def _resize(name: str) -> Handler:
    """fd_filestat_set_size / fd_allocate: charged by the apparent size they add."""

    def handler(m: Meter, c: Any, mem: GuestMemory, fd: int, *sizes: int) -> int:
        own = _charged_file(m, fd)
        growth = 0
        if own is not None:
            growth = max(0, sum(size & _U64 for size in sizes) - os.fstat(own).st_size)
            m.reserve_bytes(growth)
        errno = _forward(m, c, name, fd, *sizes)
        if errno == Errno.SUCCESS and growth:
            m.wrote(growth)
        return errno

    return handler


_fd_filestat_set_size = _resize("fd_filestat_set_size")
_fd_allocate = _resize("fd_allocate")


def _reserve_write(m: Meter, c: Any, mem: GuestMemory, name: str, args: tuple[int, ...],
                   requested: int) -> tuple[int, int, int] | None:
    """Charge a file write of `requested` bytes before it happens (a pwrite's hole past
    the end of the file too); return (fd, own descriptor, size before) for
    `_settle_write`. Nothing is charged in a read-only preopen: wasmtime refuses the
    write itself."""
    fd = args[0]
    entry = m.fds.get(fd)
    if entry is not None and not entry.writable:
        return None
    own = _charged_file(m, fd)
    if own is None:
        m.reserve_bytes(requested)
        return None
    size = os.fstat(own).st_size
    hole = max(0, (args[3] & _U64) - size) if name == "fd_pwrite" else 0
    m.reserve_bytes(requested + hole)
    return fd, own, size


def _settle_write(m: Meter, c: Any, mem: GuestMemory, before: tuple[int, int, int] | None,
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
        _forward(m, c, "fd_filestat_set_size", fd, size)
        raise
    m.wrote(hole)


def _fd_close(m: Meter, c: Any, mem: GuestMemory, fd: int) -> int:
    errno = _forward(m, c, "fd_close", fd)
    if errno == Errno.SUCCESS:
        m.closed(fd)
    return errno


def _fd_renumber(m: Meter, c: Any, mem: GuestMemory, fd: int, to: int) -> int:
    errno = _forward(m, c, "fd_renumber", fd, to)
    if errno == Errno.SUCCESS:
        m.renumbered(fd, to)
    return errno


def _sync(name: str) -> Handler:
    def handler(m: Meter, c: Any, mem: GuestMemory, fd: int) -> int:
        if m.allow_sync():
            return _forward(m, c, name, fd)
        return Errno.SUCCESS  # policy `ignore`: the data stays in the page cache

    return handler


def _set_flags(m: Meter, c: Any, mem: GuestMemory, fd: int, flags: int) -> int:
    if m.limits.sync_limit() == 0:
        flags &= ~FDFLAGS_SYNC_MASK
    return _forward(m, c, "fd_fdstat_set_flags", fd, flags)


def _poll_oneoff(m: Meter, c: Any, mem: GuestMemory, subs: int, out: int, n: int,
                 nevents: int) -> int:
    errno = poll.check_count(n)
    if errno is not None:
        return errno
    raw = mem.read(subs, n * poll.SUBSCRIPTION_SIZE)
    parsed = poll.parse(raw, n, m.clock_base)
    if isinstance(parsed, int):
        return parsed
    if parsed.fds:
        return _poll_descriptors(m, c, mem, (subs, out, n, nevents), parsed, raw)
    events = parsed.failed or [(userdata, Errno.SUCCESS, poll.TAG_CLOCK)
                               for userdata in poll.wait(parsed.clocks, m.remaining_time())]
    mem.write(out, poll.pack_events(events))
    mem.put_u32(nevents, len(events))
    return Errno.SUCCESS


def _poll_descriptors(m: Meter, c: Any, mem: GuestMemory, args: tuple[int, int, int, int],
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
        errno = _forward(m, c, "poll_oneoff", *args)
    finally:
        mem.write(subs, raw)
    remaining = m.remaining_time()
    if remaining is not None and remaining <= 0:
        raise GuestStopped(Outcome.TIMEOUT, "wall-clock timeout (guest was polling)")
    return errno


def _forwarding(name: str) -> Handler:
    def handler(m: Meter, c: Any, mem: GuestMemory, *args: int) -> int:
        return _forward(m, c, name, *args)

    return handler


def _paths_bounded(handler: Handler, lengths: tuple[int, ...]) -> Handler:
    """`handler` behind a check of its path length arguments (positions `lengths`):
    ENAMETOOLONG past PATH_MAX before any path is read, whatever the descriptor."""

    def bounded(m: Meter, c: Any, mem: GuestMemory, *args: int) -> int:
        if any(path_too_long(args[index]) for index in lengths):
            return Errno.NAMETOOLONG
        return handler(m, c, mem, *args)

    return bounded


# Argument positions of the path lengths of the owned calls that take paths.
_PATH_LENGTHS: dict[str, tuple[int, ...]] = {
    "path_open": (3,), "path_create_directory": (2,), "path_symlink": (1, 4),
    "path_link": (3, 6), "path_rename": (2, 5), "path_unlink_file": (2,),
    "path_remove_directory": (2,),
}

HANDLERS: dict[str, Handler] = {name: _forwarding(name) for name in INTERPOSED}
HANDLERS.update(
    fd_write=_fd_write,
    fd_pwrite=_fd_pwrite,
    fd_read=_fd_read,
    fd_pread=_iovec_call("fd_pread", 1, 4),
    sock_recv=_iovec_call("sock_recv", 1, 4),
    sock_send=_iovec_call("sock_send", 1, 4),
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
)
HANDLERS.update({name: _paths_bounded(HANDLERS[name], lengths)
                 for name, lengths in _PATH_LENGTHS.items()})


# The raw callback type of `wasmtime_linker_define_func_unchecked`: arguments and the
# result in one array of untyped slots, a trap pointer (or 0) returned.
_Callback = ffi.wasmtime_func_unchecked_callback_t
_CALLBACKS: dict[str, Any] = {}  # one per call, alive as long as the process: linkers hold them


def _entry(name: str, handler: Handler, params: tuple[str, ...]) -> Any:
    """The raw host function for `name` (one per name, shared by every linker):
    wasmtime-py's callback wrapper would box every argument and the result, a third of a
    metered call's cost; this reads them in place. A `GuestStopped` or any other
    exception is kept on the meter for the sandbox and the guest stopped with a trap
    (never unwinding into wasmtime)."""
    callback = _CALLBACKS.get(name)
    if callback is not None:
        return callback
    wide = tuple(param == "i64" for param in params)

    def host_call(_env: Any, caller_ptr: Any, slots: Any, _count: int) -> int:
        meter: Meter | None = getattr(_local, "meter", None)
        if meter is None:
            return _trap(f"{name} called outside a metered run")
        caller = wasmtime.Caller(caller_ptr)
        try:
            args = [slots[i].i64 if is_wide else slots[i].i32 for i, is_wide in enumerate(wide)]
            meter.charge(name)
            try:
                # The export handle stays valid for the store's life; its base address may
                # move when memory grows, so GuestMemory re-reads that on every call.
                if meter.memory is None:
                    meter.memory = caller["memory"]
                memory = GuestMemory(meter.memory, caller)
                errno = handler(meter, caller, memory, *args)
            except (IndexError, KeyError):
                errno = Errno.FAULT
            slots[0].i32 = errno
            return 0
        except BaseException as exc:  # noqa: BLE001 - the sandbox classifies it
            if meter.failure is None:
                meter.failure = exc
            return _trap(f"stockade: {name}: {exc}")
        finally:
            caller._invalidate()

    callback = _CALLBACKS[name] = _Callback(host_call)
    return callback


def _trap(message: str) -> int:
    trap = wasmtime.Trap(message)._consume()
    address: int = ctypes.cast(trap, ctypes.c_void_p).value or 0
    return address


def build_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker with all of WASI preview 1, the costly calls shadowed by metered versions."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    types = {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64()}
    module = MODULE.encode()
    for name, params in INTERPOSED.items():
        functype = wasmtime.FuncType([types[p] for p in params], [types["i32"]])
        raw_name = name.encode()
        error = ffi.wasmtime_linker_define_func_unchecked(
            linker.ptr(), ctypes.create_string_buffer(module), len(module),
            ctypes.create_string_buffer(raw_name), len(raw_name), functype.ptr(),
            _entry(name, HANDLERS[name], params), None, _NO_FINALIZER)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
    return linker


_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()

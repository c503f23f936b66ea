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
)
from .meter import Meter, is_special_file, path_exists

__all__ = ["build_linker", "metered", "LINKER_NAME"]

LINKER_NAME = "stockade-metered"
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


def _trampoline_wat() -> str:
    # WASI finds memory through the calling instance's "memory" export: re-export the guest's.
    lines = ['(module (import "env" "memory" (memory 0)) (export "memory" (memory 0))']
    for name, params in INTERPOSED.items():
        sig = f"(param {' '.join(params)}) (result i32)"
        lines.append(f'(import "{MODULE}" "{name}" (func ${name} {sig}))')
    for name, params in INTERPOSED.items():
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
        funcs = {export: exports[export] for export in INTERPOSED}
        meter.trampoline = {
            export: _RawCall(func, INTERPOSED[export]) for export, func in funcs.items()
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
    errno = _forward_io(m, c, mem, name, args, iovs, n, reserve=True)
    if errno == Errno.SUCCESS:
        m.wrote(mem.u32(args[-1]))
    return errno


def _forward_io(m: Meter, c: Any, mem: GuestMemory, name: str, args: tuple[int, ...],
                iovs: int, n: int, reserve: bool = False) -> int:
    """Forward a read or write to wasmtime with its iovecs bounded first: at most
    `MAX_IOVECS` (else EINVAL), and the one buffer wasmtime uses for a file (the first
    non-empty one) cut to `MAX_IO_BYTES` for the call, then restored. With `reserve`,
    that many bytes are charged to the disk quota first."""
    try:
        first = mem.first_buffer(iovs, n)
    except ValueError:
        return Errno.INVAL
    if first is None:
        return _forward(m, c, name, *args)
    index, _, length = first
    take = min(length, MAX_IO_BYTES)
    if reserve:
        m.reserve_bytes(take)
    if take == length:
        return _forward(m, c, name, *args)
    # The guest is single-threaded and inside this call: nothing sees the shorter length.
    entry = iovs + 8 * index + 4
    mem.put_u32(entry, take)
    try:
        return _forward(m, c, name, *args)
    finally:
        mem.put_u32(entry, length)


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
    return _forward_io(m, c, mem, "fd_read", (fd, iovs, n, ret), iovs, n)


def _path_open(m: Meter, c: Any, mem: GuestMemory, dirfd: int, dirflags: int, path: int,
               path_len: int, oflags: int, base: int, inheriting: int, fdflags: int,
               out: int) -> int:
    m.reserve_fd()
    host = m.host_path(dirfd, mem.path(path, path_len))
    if host is not None and is_special_file(host):
        return Errno.ACCES  # devices and FIFOs can block or reach the host
    creating = bool(oflags & OFLAG_CREAT) and (host is None or not path_exists(host))
    if creating:
        m.reserve_file()
    if m.limits.sync_limit() == 0:
        fdflags &= ~FDFLAGS_SYNC_MASK
    errno = _forward(m, c, "path_open", dirfd, dirflags, path, path_len, oflags, base,
                     inheriting, fdflags, out)
    if errno == Errno.SUCCESS:
        m.files_created += creating
        m.opened(mem.u32(out), host)
    return errno


def _creates(name: str) -> Handler:
    def handler(m: Meter, c: Any, mem: GuestMemory, *args: int) -> int:
        m.reserve_file()
        errno = _forward(m, c, name, *args)
        if errno == Errno.SUCCESS:
            m.files_created += 1
        return errno

    return handler


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


def _fd_allocate(m: Meter, c: Any, mem: GuestMemory, fd: int, offset: int, length: int) -> int:
    m.reserve_bytes(length)
    return _forward(m, c, "fd_allocate", fd, offset, length)


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


HANDLERS: dict[str, Handler] = {name: _forwarding(name) for name in INTERPOSED}
HANDLERS.update(
    fd_write=_fd_write,
    fd_pwrite=_fd_pwrite,
    fd_read=_fd_read,
    path_open=_path_open,
    path_create_directory=_creates("path_create_directory"),
    path_symlink=_creates("path_symlink"),
    path_link=_creates("path_link"),
    fd_close=_fd_close,
    fd_renumber=_fd_renumber,
    fd_sync=_sync("fd_sync"),
    fd_datasync=_sync("fd_datasync"),
    fd_fdstat_set_flags=_set_flags,
    fd_allocate=_fd_allocate,
    poll_oneoff=_poll_oneoff,
)


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

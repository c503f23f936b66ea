"""An owned `poll_oneoff` for the fast path: a sleeping guest still meets its deadline.

Epoch interruption fires only in wasm code, so wasmtime's own `poll_oneoff` would let a
guest in `sleep(8)` hold its thread and pool slot for 8 s under a 1 s timeout. This
replacement sleeps at most until the run's deadline, then stops the guest with
`timeout`. Its I/O answers are exact for the fast path's fixed descriptors: stdin is an
in-memory pipe and stdout/stderr are files, so descriptors 0-2 are always ready.

It is a Python callback, entered only while a guest runs and only when the guest
polls (sleeps); the per-call path stays free of Python callbacks.
"""

from __future__ import annotations

import ctypes
import struct
import time
from ctypes import CFUNCTYPE, POINTER, c_size_t, c_void_p
from typing import Any

from ._capi import EXTERN_MEMORY, C, Extern, ValRaw, ValTypeVec, take_error
from ._run import RunSlot

__all__ = ["define_poll_oneoff"]

_SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id, timeout, _, flags
_FD_SUBSCRIPTION = struct.Struct("<QB7xI")  # userdata, tag, fd
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, errno, type, nbytes, flags
_TAG_CLOCK = 0
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1
_ABSTIME = 1
_ESUCCESS, _EBADF, _EFAULT, _EINVAL = 0, 8, 21, 28
_STD_FDS = (0, 1, 2)

_Callback = CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(ValRaw), c_size_t)


def define_poll_oneoff(linker: int) -> None:
    """Replace WASI's `poll_oneoff` in `linker` (already holding WASI) with this one."""
    C.linker_allow_shadowing(linker, True)
    i32 = [C.wasm_valtype_new(0) for _ in range(5)]  # WASM_I32
    params, results = ValTypeVec(), ValTypeVec()
    C.wasm_valtype_vec_new(ctypes.byref(params), 4, (c_void_p * 4)(*i32[:4]))
    C.wasm_valtype_vec_new(ctypes.byref(results), 1, (c_void_p * 1)(i32[4]))
    functype = C.wasm_functype_new(ctypes.byref(params), ctypes.byref(results))
    module, name = b"wasi_snapshot_preview1", b"poll_oneoff"
    error = C.linker_define_func_unchecked(linker, module, len(module), name, len(name),
                                           functype, ctypes.cast(_CALLBACK, c_void_p), None,
                                           None)
    C.wasm_functype_delete(functype)
    if error:
        raise RuntimeError(f"cannot define poll_oneoff: {take_error(error)[0]}")


def _poll_oneoff(_env: Any, caller: Any, args: Any, _count: int) -> int:
    try:
        args[0].i32 = _poll(caller, args)
        return 0
    except _Stop as stop:
        return int(C.trap_new(stop.message, len(stop.message)))
    except BaseException:  # never unwind into wasmtime
        message = b"stockade: poll_oneoff failed in the host"
        return int(C.trap_new(message, len(message)))


class _Stop(Exception):
    def __init__(self, message: bytes) -> None:
        super().__init__(message)
        self.message = message


def _poll(caller: int, args: Any) -> int:
    context = C.caller_context(caller)
    slot = RunSlot.live.get(C.context_get_data(context) or 0)
    memory = Extern()
    if slot is None or not C.caller_export_get(caller, b"memory", 6, ctypes.byref(memory)) \
            or memory.kind != EXTERN_MEMORY:
        return _EINVAL
    base = C.memory_data(context, ctypes.byref(memory.of.memory)) or 0
    size = C.memory_data_size(context, ctypes.byref(memory.of.memory))
    in_ptr, out_ptr, count, ret_ptr = (args[i].i32 & 0xFFFFFFFF for i in range(4))
    if count == 0:
        return _EINVAL
    if max(in_ptr + count * 48, out_ptr + count * 32, ret_ptr + 4) > size:
        return _EFAULT
    raw = ctypes.string_at(base + in_ptr, count * 48)
    events = _ready_descriptors(raw, count) or _sleep(slot, raw, count)
    packed = b"".join(_EVENT.pack(userdata, errno, tag, 0, 0) for userdata, errno, tag in events)
    ctypes.memmove(base + out_ptr, packed, len(packed))
    ctypes.memmove(base + ret_ptr, struct.pack("<I", len(events)), 4)
    return _ESUCCESS


def _ready_descriptors(raw: bytes, count: int) -> list[tuple[int, int, int]]:
    """Events for every descriptor subscription: all are ready at once (or EBADF)."""
    events = []
    for index in range(count):
        userdata, tag, fd = _FD_SUBSCRIPTION.unpack_from(raw, index * 48)
        if tag != _TAG_CLOCK:
            events.append((userdata, _ESUCCESS if fd in _STD_FDS else _EBADF, tag))
    return events


def _sleep(slot: RunSlot, raw: bytes, count: int) -> list[tuple[int, int, int]]:
    """Sleep until the earliest clock is due (or stop the guest at its deadline)."""
    waits: list[tuple[int, float]] = []
    for index in range(count):
        userdata, _tag, clock, timeout, _precision, flags = _SUBSCRIPTION.unpack_from(
            raw, index * 48)
        if clock not in (_CLOCK_REALTIME, _CLOCK_MONOTONIC):
            return [(userdata, _EINVAL, _TAG_CLOCK)]
        if flags & _ABSTIME:
            # The guest's monotonic clock counts from its WASI context's creation.
            now = time.time_ns() if clock == _CLOCK_REALTIME else \
                time.monotonic_ns() - slot.clock_base
            timeout = max(0, timeout - now)
        waits.append((userdata, timeout / 1e9))
    shortest = min(wait for _, wait in waits)
    if slot.deadline is not None and slot.deadline - time.monotonic() < shortest:
        time.sleep(max(0.0, slot.deadline - time.monotonic()))
        slot.stopped = True
        raise _Stop(b"wall-clock timeout (guest was sleeping)")
    time.sleep(shortest)
    return [(userdata, _ESUCCESS, _TAG_CLOCK) for userdata, wait in waits if wait <= shortest]


_CALLBACK = _Callback(_poll_oneoff)  # one object, alive as long as the module

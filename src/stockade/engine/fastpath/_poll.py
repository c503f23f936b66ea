"""The fast path's `poll_oneoff`: `stockade.hostcalls.poll` bound to a `RunSlot`.

Epoch interruption fires only in wasm code, so wasmtime's own `poll_oneoff` would let a
guest in `sleep(8)` hold its thread and pool slot for 8 s under a 1 s timeout. This
replacement (the sandbox's, from `hostcalls.poll`: parsing, bounds, absolute clocks)
sleeps at most until the run's deadline, then stops the guest with `timeout`. Its I/O
answers are exact for the fast path's fixed descriptors: stdin is an in-memory pipe and
stdout/stderr are files, so descriptors 0-2 are always ready. Each call counts toward
the run's host-call budget, like the standard streams the native library serves.

It is a Python callback, entered only while a guest runs and only when the guest
polls (sleeps); the per-call path stays free of Python callbacks. The call itself is
`hostcalls.poll.serve`, the one a metered run uses too; only the answer for
descriptors is this path's own.
"""

from __future__ import annotations

import ctypes
import time
from ctypes import CFUNCTYPE, POINTER, c_size_t, c_void_p

from ...hostcalls import poll
from ...hostcalls.abi import INTERPOSED, MODULE, GuestMemory
from ...result import GuestStopped
from ._capi import EXTERN_MEMORY, C, Extern, ValRaw, ValTypeVec, take_error
from ._native import CALL_POLL, STDIO, STOP_HOSTCALLS
from ._run import RunSlot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["define_owned_calls", "define_func", "CALLBACK_TYPE"]

_ESUCCESS, _EBADF, _EINVAL = 0, 8, 28
_STD_FDS = (0, 1, 2)

# `wasmtime_func_unchecked_callback_t`: (env, caller, argument and result slots, their
# count) -> a trap to stop the guest with, or 0.
CALLBACK_TYPE = CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(ValRaw), c_size_t)


def define_owned_calls(linker: int) -> bool:
    """Replace WASI's `poll_oneoff` in `linker` (already holding WASI) with this one, and
    its `fd_write`, `fd_read`, `fd_close`, `random_get`, `fd_sync`, `fd_datasync` and
    `sock_*` with the native library's (`_native.STDIO`) when it is loaded. Whether the standard
    streams are owned (counted, capped)."""
    C.linker_allow_shadowing(linker, True)
    define_func(linker, b"poll_oneoff", INTERPOSED["poll_oneoff"],
                ctypes.cast(_CALLBACK, c_void_p))
    if STDIO is None:
        return False
    for name, address in STDIO.items():
        define_func(linker, name.encode(), INTERPOSED[name], c_void_p(address))
    return True


def define_func(linker: int, name: bytes, params: tuple[str, ...], callback: Any,
                results: tuple[str, ...] = ("i32",)) -> None:
    """Define WASI's `name` in `linker` as the raw host function at `callback` (a
    `wasmtime_func_unchecked_callback_t`) taking `params` ("i32"/"i64"), returning
    `results` (an i32, an errno, but for `proc_exit`)."""
    valtypes = [C.wasm_valtype_new(_VALTYPES[kind]) for kind in (*params, *results)]
    args, outs = ValTypeVec(), ValTypeVec()
    count, returned = len(params), len(results)
    C.wasm_valtype_vec_new(ctypes.byref(args), count, (c_void_p * count)(*valtypes[:count]))
    C.wasm_valtype_vec_new(ctypes.byref(outs), returned,
                           (c_void_p * returned)(*valtypes[count:]))
    functype = C.wasm_functype_new(ctypes.byref(args), ctypes.byref(outs))
    module = MODULE.encode()
    error = C.linker_define_func_unchecked(linker, module, len(module), name, len(name),
                                           functype, callback, None, None)
    C.wasm_functype_delete(functype)
    if error:
        raise RuntimeError(f"cannot define {name.decode()}: {take_error(error)[0]}")


_VALTYPES = {"i32": 0, "i64": 1}  # WASM_I32, WASM_I64


def _poll_oneoff(_env: Any, caller: Any, args: Any, _count: int) -> int:
    try:
        args[0].i32 = _poll(caller, args)
        return 0
    except _Stop as stop:
        return int(C.trap_new(stop.message, len(stop.message)))
    except KeyboardInterrupt:  # raised again once the run is back in Python
        slot = RunSlot.live.get(C.context_get_data(C.caller_context(caller)) or 0)
        if slot is not None:
            slot.interrupted = True
        return int(C.trap_new(_INTERRUPTED, len(_INTERRUPTED)))
    except BaseException:  # never unwind into wasmtime
        message = b"stockade: poll_oneoff failed in the host"
        return int(C.trap_new(message, len(message)))


_INTERRUPTED = b"stockade: interrupted"


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
    state = slot.state
    state.calls[CALL_POLL] += 1
    state.hostcalls += 1
    if state.hostcalls > state.max_hostcalls:
        state.stop = STOP_HOSTCALLS
        raise _Stop(b"host-call budget exhausted")
    handle = ctypes.byref(memory.of.memory)
    mem = GuestMemory(C.memory_data(context, handle) or 0, C.memory_data_size(context, handle))

    def descriptors(parsed: poll.Poll, _raw: bytes, addresses: tuple[int, int, int, int]) -> int:
        # stdin is an in-memory pipe and stdout/stderr are files: descriptors 0-2 are
        # always ready, so a poll naming any returns at once. Others do not exist: the
        # whole call is EBADF, as wasmtime answers it on every other backend.
        if any(fd not in _STD_FDS for _, _, _, fd in parsed.fds):
            return _EBADF
        events = [(userdata, _ESUCCESS, tag) for _, userdata, tag, _ in parsed.fds]
        poll.put_events(mem, addresses[1], addresses[3], events)
        return _ESUCCESS

    remaining = None if slot.deadline is None else slot.deadline - time.monotonic()
    try:
        return poll.serve(mem, (args[0].i32, args[1].i32, args[2].i32, args[3].i32),
                          slot.clock_base, remaining, descriptors, slot.wake)
    except GuestStopped as stop:
        slot.stopped = True
        raise _Stop(stop.message.encode()) from None


_CALLBACK = CALLBACK_TYPE(_poll_oneoff)  # one object, alive as long as the module

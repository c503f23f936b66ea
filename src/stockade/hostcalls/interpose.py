"""The owned WASI calls on wasmtime-py: `build_linker` shadows the costly calls in a
linker with raw host functions that serve `handlers.HANDLERS`.

This module only binds (the handlers themselves are backend-neutral): it finds the
run's `Meter`, the guest's memory and wasmtime's own WASI for forwarding. Forwarding
goes through a tiny per-store *trampoline* module that imports the guest's memory: a
WASI function called straight from the host finds no caller memory, but called from
wasm code it finds the trampoline's (the guest's own).

The meter of the run is found through a thread-local: a guest runs on the thread
that called `_start`, and its host calls arrive on that same thread.

Ctrl-C: a KeyboardInterrupt raised as a ctypes callback is entered, before its `try`,
cannot be caught there: ctypes prints "Exception ignored", and the callback returns
garbage to wasmtime (a trap pointer it frees). So while a run on the main thread has
Python's own SIGINT handler, `metered` puts one in its place that raises only inside a
host call's body (the call then stops the guest with a trap, as for any failure) and
elsewhere notes the interrupt: the next host call stops the guest, and the sandbox
raises KeyboardInterrupt once the guest has stopped (`metered.interrupted`).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import weakref
from types import FrameType
from typing import Any, cast

import wasmtime
from wasmtime import _ffi as ffi

from ..result import GuestExited
from .abi import MODULE, SHADOWED, GuestMemory
from .handlers import TRAMPOLINE_CALLS, arguments, serve, stopping, trampoline_wat
from .meter import Meter

__all__ = ["build_linker", "metered", "LINKER_NAME"]

LINKER_NAME = "stockade-metered"


class _Local(threading.local):
    """The run of this thread (class defaults: no AttributeError caught per call)."""

    meter: Meter | None = None
    engine: wasmtime.Engine | None = None
    raisable = False  # in a host call's body: an interrupt raised there stops the guest
    interrupted = False  # Ctrl-C noted where it could not be raised


_local = _Local()
# Keyed by the engine itself, never its `id`: an address is reused once an engine is
# freed, and a module compiled for the dead engine cannot run in the new one.
_trampolines: weakref.WeakKeyDictionary[wasmtime.Engine, wasmtime.Module] = \
    weakref.WeakKeyDictionary()
_trampolines_lock = threading.Lock()


class metered:  # noqa: N801 - used as a context manager like a function
    """Context manager installing `meter` for host calls made on this thread, and on
    the main thread the run's SIGINT handler (module docstring). `interrupted` says,
    once it has exited, whether Ctrl-C came during the run: the caller raises
    KeyboardInterrupt then."""

    def __init__(self, meter: Meter, engine: wasmtime.Engine) -> None:
        self.meter = meter
        self.engine = engine
        self.interrupted = False
        self._handler = False

    def __enter__(self) -> Meter:
        _local.meter = self.meter
        _local.engine = self.engine
        _local.interrupted = _local.raisable = False
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
            self._handler = True
        return self.meter

    def __exit__(self, *exc: object) -> None:
        try:
            if self._handler:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        finally:
            self.interrupted = _local.interrupted
            _local.interrupted = _local.raisable = False
            _local.meter = None
            _local.engine = None
            self.meter.close()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT during a run on the main thread: raised in a host call's body, noted
    anywhere else (a callback's entry cannot catch it)."""
    if _local.raisable:
        raise KeyboardInterrupt
    _local.interrupted = True


def _trampoline_module(engine: wasmtime.Engine) -> wasmtime.Module:
    with _trampolines_lock:
        module = _trampolines.get(engine)
        if module is None:
            module = _trampolines[engine] = wasmtime.Module(engine, trampoline_wat())
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


class _Host:
    """`handlers.Host` for one call of a wasmtime-py guest."""

    __slots__ = ("meter", "caller")

    def __init__(self, meter: Meter, caller: wasmtime.Caller) -> None:
        self.meter = meter
        self.caller = caller

    def forward(self, name: str, *args: int) -> int:
        meter, caller = self.meter, self.caller
        if meter.trampoline is None:
            engine = cast(wasmtime.Engine, _local.engine)  # set with the meter
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            linker.define(caller, "env", "memory", caller["memory"])
            instance = linker.instantiate(caller, _trampoline_module(engine))
            exports = instance.exports(caller)
            funcs = {export: exports[export] for export in TRAMPOLINE_CALLS}
            meter.trampoline = {
                export: _RawCall(func, TRAMPOLINE_CALLS[export])
                for export, func in funcs.items() if isinstance(func, wasmtime.Func)
            }
        call: Any = meter.trampoline[name]
        result: int = call(caller, args)
        return result

    def memory(self) -> GuestMemory:
        """The guest's memory for this call. The export handle stays valid for the
        store's life; its base address may move when memory grows: read per call.
        KeyError when the guest exports no memory under that name (EFAULT)."""
        meter = self.meter
        if meter.memory is None:
            found = self.caller["memory"]
            if not isinstance(found, wasmtime.Memory):
                raise KeyError("memory")  # a function under the name: no memory either
            meter.memory = found
        memory: Any = meter.memory
        context, handle = self.caller._context(), ctypes.byref(memory._memory)
        return GuestMemory(_memory_data(context, handle) or 0,
                           _memory_data_size(context, handle))


def _prototype(name: str, restype: Any) -> Any:
    function = ffi.dll[name]  # a new function object: wasmtime-py's own stays untouched
    function.restype = restype
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return function


# Straight to the C API: wasmtime-py's data_ptr returns a typed pointer that costs a
# ctypes.cast on every host call.
_memory_data = _prototype("wasmtime_memory_data", ctypes.c_void_p)
_memory_data_size = _prototype("wasmtime_memory_data_size", ctypes.c_size_t)

# The raw callback type of `wasmtime_linker_define_func_unchecked`: arguments and the
# result in one array of untyped slots, a trap pointer (or 0) returned.
_Callback = ffi.wasmtime_func_unchecked_callback_t
def _entry(name: str, params: tuple[str, ...]) -> Any:
    """The raw host function for `name` (made once per name, shared by every linker):
    wasmtime-py's callback wrapper would box every argument and the result, a third of a
    metered call's cost; this reads them in place. A `GuestStopped` or any other
    exception is kept on the meter for the sandbox and the guest stopped with a trap
    (never unwinding into wasmtime)."""
    wide = tuple(param == "i64" for param in params)

    def host_call(_env: Any, caller_ptr: Any, slots: Any, _count: int) -> int:
        local = _local
        meter = local.meter
        if meter is None:
            return _trap(f"{name} called outside a metered run")
        caller = wasmtime.Caller(caller_ptr)
        try:
            # Nothing between here and the `try` checks for signals (no call).
            local.raisable = True
            if local.interrupted:  # Ctrl-C noted since the last call: stop the guest
                raise KeyboardInterrupt
            host = _Host(meter, caller)
            slots[0].i32 = serve(name, meter, host, host.memory, arguments(slots, wide))
            return 0
        except BaseException as exc:  # noqa: BLE001 - the sandbox classifies it
            local.raisable = False
            return _trap(stopping(meter, name, exc))
        finally:
            local.raisable = False
            caller._invalidate()

    return _Callback(host_call)


def _trap(message: str) -> int:
    trap = wasmtime.Trap(message)._consume()
    address: int = ctypes.cast(trap, ctypes.c_void_p).value or 0
    return address


def build_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker with all of WASI preview 1, the costly calls shadowed by metered versions
    and `proc_exit` by one taking every exit code."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    types = {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64()}
    for name, params in SHADOWED.items():
        _define(linker, name, wasmtime.FuncType([types[p] for p in params], [types["i32"]]),
                _CALLBACKS[name])
    _define(linker, "proc_exit", wasmtime.FuncType([types["i32"]], []), _PROC_EXIT)
    return linker


def _define(linker: wasmtime.Linker, name: str, functype: wasmtime.FuncType,
            callback: Any) -> None:
    module, raw_name = MODULE.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(), ctypes.create_string_buffer(module), len(module),
        ctypes.create_string_buffer(raw_name), len(raw_name), functype.ptr(), callback, None,
        _NO_FINALIZER)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


def _proc_exit(_env: Any, _caller: Any, slots: Any, _count: int) -> int:
    """WASI `proc_exit`, any code: wasmtime's fails codes past 125, which read as a trap.
    The code is kept on the meter (`GuestExited`) and the guest stopped with a trap."""
    try:
        meter = _local.meter
        if meter is None:
            return _trap("proc_exit called outside a metered run")
        return _trap(stopping(meter, "proc_exit", GuestExited(slots[0].i32 & 0xFFFFFFFF)))
    except BaseException:  # noqa: BLE001 - never unwind into wasmtime
        return _trap("proc_exit failed in the host")


_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()
# One per call, made once (at import, under the import lock: two engines building their
# linkers at once must not replace one another's) and alive as long as the process.
_CALLBACKS: dict[str, Any] = {name: _entry(name, params) for name, params in SHADOWED.items()}
_PROC_EXIT = _Callback(_proc_exit)

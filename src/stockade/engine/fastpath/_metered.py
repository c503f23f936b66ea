"""Metered runs on the C API: `hostcalls.handlers` bound to the fast path.

A metered run carries a `Meter` (preopened directories, disk, file and descriptor
quotas, the output cap, the host-call budget and per-call caps, the deadline in blocking
calls): the same handlers as the wasmtime-py sandbox answer its owned WASI calls, so
its outcomes and errnos are the sandbox's. This module only binds them:

- `MeteredLinking` (one per `FastEngine`, made on first use): a linker with WASI
  preview 1 whose owned calls are raw host functions entering `serve`, a plain WASI
  linker, and the forwarding trampoline module; and per module an InstancePre.
- `MeteredRun` (one per run, on its `RunSlot`): finds the guest's memory, forwards to
  wasmtime's own WASI through the trampoline (instantiated in the run's store on the
  first forwarded call), makes the WASI context (argv, environment, preopens; the
  standard streams are the meter's), sets the store's limits and gives the verdict of
  what stopped the guest.

A call finds its run through the store's data word (`RunSlot.live`), as the owned
`poll_oneoff` does. Runs without a meter never enter this module.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Sequence
from ctypes import c_void_p
from typing import TYPE_CHECKING, Any

from ...errors import UsageError
from ...hostcalls.abi import MODULE, SHADOWED, GuestMemory
from ...hostcalls.handlers import TRAMPOLINE_CALLS, arguments, serve, stopping, trampoline_wat
from ...hostcalls.meter import Meter
from ..traps import Ending, classify
from ..trip import with_page
from ._capi import EXTERN_FUNC, EXTERN_MEMORY, C, Extern, Instance, ValRaw, take_error
from ._exit import define_exit
from ._module import raise_load, wat2wasm
from ._poll import CALLBACK_TYPE, define_func
from ._run import RunSlot, _strings

if TYPE_CHECKING:
    from ._module import FastModule

__all__ = ["MeteredLinking", "MeteredRun"]

_MODULE = MODULE.encode()


class MeteredLinking:
    """What the metered runs of one engine share: the metered linker (WASI with the
    owned calls shadowed), a plain WASI linker the trampoline's imports come from, and
    the compiled trampoline. `pre(module)` pre-links a module against the metered
    linker, once (kept on the module, freed with it). `close()` frees all; safe twice."""

    def __init__(self, engine: int) -> None:
        self.linker = self.wasi = self.trampoline = 0
        try:
            self.linker = int(C.linker_new(engine))
            raise_load(C.linker_define_wasi(self.linker), "WASI")
            C.linker_allow_shadowing(self.linker, True)
            for name, params in SHADOWED.items():
                define_func(self.linker, name.encode(), params,
                            ctypes.cast(_CALLBACKS[name], c_void_p))
            define_exit(self.linker)
            self.wasi = int(C.linker_new(engine))
            raise_load(C.linker_define_wasi(self.wasi), "WASI")
            self.trampoline = _compile(engine, trampoline_wat())
        except BaseException:
            self.close()
            raise
        # The trampoline's imports in its own order: memory first, then the calls.
        self.imports = [name.encode() for name in TRAMPOLINE_CALLS]
        self._lock = threading.Lock()

    def pre(self, module: FastModule) -> int:
        """`module`'s InstancePre with the metered linker (made once per module)."""
        with self._lock:
            if module._metered_pre is None:
                handle = module._module
                if handle is None:
                    raise UsageError(f"{module.name}: module is closed")
                out = c_void_p()
                raise_load(C.linker_instantiate_pre(self.linker, handle, ctypes.byref(out)),
                           module.name)
                module._metered_pre = int(out.value or 0)
            return module._metered_pre

    def close(self) -> None:
        """Free the linkers and the trampoline module. Safe twice."""
        for linker in (self.linker, self.wasi):
            if linker:
                C.linker_delete(linker)
        if self.trampoline:
            C.module_delete(self.trampoline)
        self.linker = self.wasi = self.trampoline = 0


def _compile(engine: int, wat: str) -> int:
    wasm = wat2wasm(wat, "trampoline")
    out = c_void_p()
    raise_load(C.module_new(engine, wasm, len(wasm), ctypes.byref(out)), "trampoline")
    return int(out.value or 0)


class MeteredRun:
    """One metered run: its `meter`, the guest paths of the meter's preopens (`dirs`),
    the InstancePre to instantiate (`pre`), and the run's `handlers.Host`: the caller
    and store context of the call in progress (a store's calls come one at a time, on
    its thread), the guest's memory handle and the trampoline's functions."""

    __slots__ = ("meter", "dirs", "pre", "linking", "caller", "context", "_memory", "_funcs",
                 "_instance")

    def __init__(self, meter: Meter, dirs: Sequence[str], pre: int,
                 linking: MeteredLinking) -> None:
        if len(dirs) != len(meter.preopens):
            raise UsageError(f"{len(dirs)} guest paths for {len(meter.preopens)} preopened "
                             "directories: give one per directory, in order")
        self.meter = meter
        self.dirs = [_text(path, "guest path") for path in dirs]
        self.pre = pre
        self.linking = linking
        self.caller = self.context = 0
        self._memory: Any = None
        self._funcs: dict[str, tuple[Any, tuple[bool, ...]]] | None = None
        self._instance = Instance()

    # -- the run's store ---------------------------------------------------------------

    def limit(self, store: int, max_memory: int, tripwire: bool) -> None:
        """The store's limits from the meter's: memory, tables, instances (one more for
        the trampoline), memories (one more for a `tripwire`'s page), as the sandbox sets
        them."""
        elements, instances, tables, memories = self.meter.limits.store_limits
        C.store_limiter(store, max_memory, elements, instances + 1, tables,
                        with_page(memories, tripwire))

    def wasi_config(self, argv: list[bytes], names: list[bytes], values: list[bytes]) -> int:
        """The WASI context: argv, environment and the preopens (read-only unless
        writable); no standard streams, which the meter serves."""
        wasi = C.wasi_config_new()
        try:
            if not C.wasi_config_set_argv(wasi, len(argv), _strings(argv)) or (
                    names and not C.wasi_config_set_env(wasi, len(names), _strings(names),
                                                        _strings(values))):
                raise ValueError("argv or environment text is not UTF-8")
            for (host, writable), guest in zip(self.meter.preopens, self.dirs, strict=True):
                if not C.wasi_config_preopen_dir(wasi, os.fsencode(host), guest, writable):
                    raise UsageError(f"cannot preopen {host} as {guest.decode()}")
        except BaseException:
            C.wasi_config_delete(wasi)
            raise
        # The guest's monotonic clock counts from its WASI context's creation.
        self.meter.clock_base = time.monotonic_ns()
        return int(wasi)

    def ending(self, ending: Ending) -> Ending:
        """The verdict: what stopped the guest inside a host call (a limit, a host
        failure) stands over the trap it was stopped with."""
        failure = self.meter.failure
        if failure is None:
            return ending
        self.meter.failure = None  # its traceback holds host-call frames
        if isinstance(failure, KeyboardInterrupt):  # Ctrl-C in a host call: the caller's
            raise failure
        return classify(failure)

    def output(self) -> tuple[bytes, bytes, bool, bool]:
        """(stdout, stderr, stdout_truncated, stderr_truncated), as the meter kept them."""
        meter = self.meter
        return (bytes(meter.stdout), bytes(meter.stderr), meter.stdout_truncated,
                meter.stderr_truncated)

    # -- handlers.Host -----------------------------------------------------------------

    def memory(self) -> GuestMemory:
        """The guest's memory for the call in progress (its base may move when it grows:
        read on every call). KeyError without a memory export (the call answers EFAULT)."""
        if self._memory is None:
            found = Extern()
            if not C.caller_export_get(self.caller, b"memory", 6, ctypes.byref(found)) \
                    or found.kind != EXTERN_MEMORY:
                raise KeyError("memory")
            self._memory = found
        handle = ctypes.byref(self._memory.of.memory)
        return GuestMemory(C.memory_data(self.context, handle) or 0,
                           C.memory_data_size(self.context, handle))

    def forward(self, name: str, *args: int) -> int:
        """wasmtime's own WASI `name` on the guest's memory, through the trampoline. A
        trap there (the deadline or the fuel running out in the trampoline) becomes the
        guest's own: `_Trapped` carries it out to the host function's return."""
        if self._funcs is None:
            self._funcs = self._instantiate()
        func, wide = self._funcs[name]
        slots = (ValRaw * len(args))()
        for index, (is_wide, arg) in enumerate(zip(wide, args, strict=True)):
            if is_wide:
                slots[index].i64 = arg
            else:
                slots[index].i32 = arg
        trap = c_void_p()
        error = C.func_call_unchecked(self.context, ctypes.byref(func.of.func), slots,
                                      len(args), ctypes.byref(trap))
        if error:
            message, _ = take_error(error)
            raise _Trapped(int(C.trap_new(message.encode(), len(message.encode()))))
        if trap.value:
            raise _Trapped(int(trap.value))
        value: int = slots[0].i32
        return value

    def _instantiate(self) -> dict[str, tuple[Any, tuple[bool, ...]]]:
        """The trampoline in this run's store: the guest's memory and wasmtime's WASI."""
        linking, context = self.linking, self.context
        self.memory()  # the memory export, or KeyError
        imports = (Extern * (1 + len(linking.imports)))()
        imports[0] = self._memory
        for index, name in enumerate(linking.imports, start=1):
            if not C.linker_get(linking.wasi, context, _MODULE, len(_MODULE), name, len(name),
                                ctypes.byref(imports[index])):
                raise RuntimeError(f"WASI has no {name.decode()}")
        trap = c_void_p()
        error = C.instance_new(context, linking.trampoline, imports, len(imports),
                               ctypes.byref(self._instance), ctypes.byref(trap))
        if error or trap.value:
            raise _Trapped(int(trap.value) if trap.value else
                           int(C.trap_new(*_bytes_and_length(take_error(error)[0]))))
        funcs: dict[str, tuple[Any, tuple[bool, ...]]] = {}
        for export, params in TRAMPOLINE_CALLS.items():
            found = Extern()
            raw = export.encode()
            if not C.instance_export_get(context, ctypes.byref(self._instance), raw, len(raw),
                                         ctypes.byref(found)) or found.kind != EXTERN_FUNC:
                raise RuntimeError(f"trampoline lost {export}")
            funcs[export] = (found, tuple(param == "i64" for param in params))
        return funcs


class _Trapped(Exception):
    """A trap (owned `wasm_trap_t*` address) to hand to wasmtime as the guest's own."""

    def __init__(self, trap: int) -> None:
        super().__init__("trapped while forwarding to WASI")
        self.trap = trap


def _bytes_and_length(text: str) -> tuple[bytes, int]:
    data = text.encode()
    return data, len(data)


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str) or "\0" in value:
        raise UsageError(f"{what} {value!r} must be a string without NUL bytes")
    return value.encode()


def _entry(name: str, params: tuple[str, ...]) -> Any:
    """The raw host function for `name`, shared by every engine's metered linker: finds
    the run from the store's data, serves the call, and stops the guest with a trap for
    whatever `serve` raised (kept on the meter: never unwinding into wasmtime)."""
    wide = tuple(param == "i64" for param in params)

    def host_call(_env: Any, caller: int, slots: Any, _count: int) -> int:
        context = C.caller_context(caller)
        slot = RunSlot.live.get(C.context_get_data(context) or 0)
        run = None if slot is None else slot.metered
        if run is None:
            return _trap(f"stockade: {name} called outside a metered run")
        run.caller, run.context = caller, context
        meter = run.meter
        try:
            slots[0].i32 = serve(name, meter, run, run.memory, arguments(slots, wide))
            return 0
        except _Trapped as trapped:
            return trapped.trap
        except BaseException as exc:  # noqa: BLE001 - `MeteredRun.ending` classifies it
            return _trap(stopping(meter, name, exc))

    return CALLBACK_TYPE(host_call)


def _trap(message: str) -> int:
    return int(C.trap_new(*_bytes_and_length(message)))


# One per call, made once (at import, under the import lock) and alive as long as the
# process: every metered linker holds their addresses.
_CALLBACKS: dict[str, Any] = {name: _entry(name, params) for name, params in SHADOWED.items()}

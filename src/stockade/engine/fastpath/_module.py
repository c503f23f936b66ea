"""`FastModule`: a module compiled for a `FastEngine` and pre-linked against WASI.

Loading checks what the fast path needs before any run: a `_start` function, and no
import beyond WASI preview 1 (refused as `DeniedImport`, naming the import).
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterable

from ...envblock import Env
from ...errors import DeniedImport, ModuleError, UsageError
from ..traps import describe_load_message, start_with_values
from ._capi import EXTERN_FUNC, ByteVec, C, ExportTypeVec, take_error
from ._run import FastResult, RunPlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._engine import FastEngine

__all__ = ["FastModule", "Env", "prepare", "raise_load", "wat2wasm"]

_UNKNOWN_IMPORT = r"unknown import: `([^`]+)`"  # compiled on first use



class FastModule:
    """A module compiled for one `FastEngine` and pre-linked against WASI preview 1.

    Share it freely between threads; `close()` waits for its runs, then frees it (safe
    twice). Run it with `FastEngine.run` or `run`.
    """

    def __init__(self, engine: FastEngine, module: int, pre: int, name: str) -> None:
        self.engine = engine
        self.name = name
        self._module: int | None = module
        self._pre = pre
        # Pre-linked with the engine's metered linker, on a first metered run.
        self._metered_pre: int | None = None
        self._active = 0
        # `FastEngine.run`'s checked plans by their arguments (a few; cleared when full).
        self._plans: dict[tuple[Any, ...], RunPlan] = {}

    def run(
        self,
        args: Iterable[str] = (),
        env: Env = (),
        stdin: bytes = b"",
        *,
        fuel: int | None = None,
        timeout_s: float | None = None,
        max_memory: int | None = None,
        max_output: int | None = None,
        capture_stderr: bool = True,
        max_hostcalls: int | None = None,
    ) -> FastResult:
        """Shorthand for `self.engine.run(self, ...)`."""
        return self.engine.run(self, args, env, stdin, fuel=fuel, timeout_s=timeout_s,
                               max_memory=max_memory, max_output=max_output,
                               capture_stderr=capture_stderr, max_hostcalls=max_hostcalls)

    def imports(self) -> list[tuple[str, str]]:
        """The module's (module, name) imports, in order."""
        if self._module is None:
            raise UsageError(f"{self.name}: module is closed")
        found = ExportTypeVec()
        C.module_imports(self._module, ctypes.byref(found))
        try:
            return [(_text(C.wasm_importtype_module(found.data[index])),
                     _text(C.wasm_importtype_name(found.data[index])))
                    for index in range(found.size)]
        finally:
            C.wasm_importtype_vec_delete(ctypes.byref(found))

    def serialize(self) -> bytes:
        """The compiled module (`.cwasm` bytes) for `FastEngine.deserialize` or the AoT cache."""
        if self._module is None:
            raise UsageError(f"{self.name}: module is closed")
        vec = ByteVec()
        raise_load(C.module_serialize(self._module, ctypes.byref(vec)), self.name)
        data = ctypes.string_at(vec.data, vec.size)
        C.wasm_byte_vec_delete(ctypes.byref(vec))
        return data

    def close(self) -> None:
        """Wait for this module's runs to finish, then free it. Safe to call twice."""
        with self.engine._cond:
            if self._module is None:
                return
            module, self._module = self._module, None
            self._plans.clear()
            while self._active:
                self.engine._wait()
            self.engine._modules.discard(self)
        C.instance_pre_delete(self._pre)
        if self._metered_pre is not None:
            C.instance_pre_delete(self._metered_pre)
        C.module_delete(module)

    def __enter__(self) -> FastModule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare(linker: int, make: Callable[[Any], int | None], name: str) -> tuple[int, int]:
    """Create a module with `make(out_pointer)` and pre-instantiate it with `linker`:
    (module, instance_pre) addresses. Raises ModuleError, DeniedImport."""
    out = ctypes.c_void_p()
    raise_load(make(ctypes.byref(out)), name)
    module = int(out.value or 0)
    try:
        _require_start(module, name)
        pre = ctypes.c_void_p()
        error = C.linker_instantiate_pre(linker, module, ctypes.byref(pre))
        if error:
            message, _ = take_error(error)
            found = re.search(_UNKNOWN_IMPORT, message)
            if found:
                raise DeniedImport(
                    f"{name}: imports {found.group(1)}, which Stockade does not provide "
                    "(only WASI preview 1 is linked)", found.group(1))
            raise ModuleError(f"{name}: cannot link: {message.splitlines()[0]}")
    except BaseException:
        C.module_delete(module)
        raise
    return module, int(pre.value or 0)


def wat2wasm(text: str | bytes, name: str = "<wat>") -> bytes:
    """The binary of WebAssembly text, by the C API's `wasmtime_wat2wasm` (what
    wasmtime-py's `wat2wasm` calls). Raises ModuleError naming the line and column."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    vec = ByteVec()
    error = C.wat2wasm(data, len(data), ctypes.byref(vec))
    if error:
        message, _ = take_error(error)
        raise ModuleError(f"{name}: invalid WAT: {describe_load_message(message)}")
    try:
        return ctypes.string_at(vec.data, vec.size)
    finally:
        C.wasm_byte_vec_delete(ctypes.byref(vec))


def _text(name: Any) -> str:
    """A `wasm_name_t` (pointer) as text."""
    return ctypes.string_at(name.contents.data, name.contents.size).decode("utf-8", "replace")


def raise_load(error: int | None, name: str) -> None:
    """Raise ModuleError with the context and causes of a load error on one line."""
    if error:
        message, _ = take_error(error)
        raise ModuleError(f"{name}: {describe_load_message(message)}")


def _require_start(module: int, name: str) -> None:
    exports = ExportTypeVec()
    C.module_exports(module, ctypes.byref(exports))
    try:
        for index in range(exports.size):
            export = exports.data[index]
            label = C.wasm_exporttype_name(export).contents
            if ctypes.string_at(label.data, label.size) == b"_start":
                kind = C.wasm_externtype_kind(C.wasm_exporttype_type(export))
                if kind != EXTERN_FUNC:
                    break
                func = C.wasm_externtype_as_functype_const(C.wasm_exporttype_type(export))
                if C.wasm_functype_params(func).contents.size \
                        or C.wasm_functype_results(func).contents.size:
                    raise start_with_values(name)
                return
    finally:
        C.wasm_exporttype_vec_delete(ctypes.byref(exports))
    raise ModuleError(f"{name}: no `_start` function: not a WASI command module")

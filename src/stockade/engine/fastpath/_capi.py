"""The slice of wasmtime's C API the fast path calls, bound once through ctypes.

wasmtime-py ships the shared library and generated bindings; importing the bindings
costs more than a whole `stockade run` may (`stockade.engine.library`), and calling its
Python wrappers costs a frame, pointer boxing and type checks per call. Here the library
is loaded by path (wasmtime-py is never imported) and each function gets its own ctypes
prototype taking and returning plain addresses. The few struct layouts are declared
below from the pinned C headers (`wasmtime/extern.h`, `instance.h`, `val.h`, `wasm.h`);
a test compares them with wasmtime-py's generated ones.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from ...errors import FastPathUnavailable
from ..library import installed_version, load_library

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FastPathUnavailable",
    "C",
    "DLL",
    "ByteVec",
    "Instance",
    "Extern",
    "ExportTypeVec",
    "ValTypeVec",
    "ValRaw",
    "Val",
    "EXTERN_FUNC",
    "EXTERN_GLOBAL",
    "EXTERN_MEMORY",
    "take_error",
    "take_trap",
    "check_version",
    "installed_wasmtime",
]

SUPPORTED_SERIES = "50."


def installed_wasmtime() -> str:
    """The installed wasmtime-py version (see `stockade.engine.library.installed_version`)."""
    return installed_version()


def check_version(found: str) -> None:
    """Raise FastPathUnavailable unless `found` is a wasmtime version this path supports."""
    if not found.startswith(SUPPORTED_SERIES):
        raise FastPathUnavailable(
            f"the fast path is pinned to wasmtime {SUPPORTED_SERIES}x (its C ABI); found "
            f"wasmtime {found}: install wasmtime>=50.0.1,<51 or use the standard path"
        )


check_version(installed_wasmtime())
DLL: Any = load_library()


class ByteVec(ctypes.Structure):
    """`wasm_byte_vec_t`."""

    _fields_ = [("size", c_size_t), ("data", POINTER(ctypes.c_char))]


class _PointerVec(ctypes.Structure):
    """`wasm_*_vec_t` of pointers (export types, value types)."""

    _fields_ = [("size", c_size_t), ("data", POINTER(c_void_p))]


ExportTypeVec: Any = _PointerVec
ValTypeVec: Any = _PointerVec


class Instance(ctypes.Structure):
    """`wasmtime_instance_t`."""

    _fields_ = [("store_id", c_uint64), ("private", c_size_t)]


class _Func(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private", c_void_p)]


class _Head(ctypes.Structure):  # the leading anonymous struct of table, memory and tag
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32)]


class _Memory(ctypes.Structure):  # also the layout of wasmtime_table_t and wasmtime_tag_t
    _fields_ = [("head", _Head), ("private2", c_uint32)]


class _Global(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32),
                ("private3", c_uint32)]


class _ExternUnion(ctypes.Union):
    _fields_ = [("func", _Func), ("global_", _Global), ("table", _Memory),
                ("memory", _Memory), ("sharedmemory", c_void_p), ("tag", _Memory)]


class Extern(ctypes.Structure):
    """`wasmtime_extern_t`: a kind (`EXTERN_*`) and the item."""

    _fields_ = [("kind", c_uint8), ("of", _ExternUnion)]


class ValRaw(ctypes.Union):
    """`wasmtime_val_raw_t`: one argument or result slot of a host function."""

    _fields_ = [("i32", c_int32), ("i64", c_int64), ("f32", ctypes.c_float),
                ("f64", ctypes.c_double), ("v128", c_uint8 * 16), ("anyref", c_uint32),
                ("externref", c_uint32), ("exnref", c_uint32), ("funcref", c_void_p)]


class _Ref(ctypes.Structure):  # wasmtime_anyref_t, wasmtime_exnref_t (the union's largest)
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32),
                ("private3", c_void_p)]


class _ValUnion(ctypes.Union):
    _fields_ = [("i32", c_int32), ("i64", c_int64), ("f32", ctypes.c_float),
                ("f64", ctypes.c_double), ("anyref", _Ref), ("externref", _Ref),
                ("exnref", _Ref), ("funcref", _Func), ("v128", c_uint8 * 16)]


class Val(ctypes.Structure):
    """`wasmtime_val_t`: a kind and the value (what `wasmtime_global_get` writes)."""

    _fields_ = [("kind", c_uint8), ("of", _ValUnion)]


EXTERN_FUNC = 0  # WASMTIME_EXTERN_FUNC
EXTERN_GLOBAL = 1  # WASMTIME_EXTERN_GLOBAL
EXTERN_MEMORY = 3  # WASMTIME_EXTERN_MEMORY
_P = c_void_p
_PP = POINTER(c_void_p)


class _Bindings:
    """The bound functions, named without their `wasmtime_` prefix (`C.store_new`), each
    bound on first use: a `stockade run` calls about half of them."""

    def __init__(self, signatures: dict[str, tuple[str, Any, tuple[Any, ...]]]) -> None:
        self._signatures = signatures

    def __getattr__(self, short: str) -> Any:
        try:
            name, restype, argtypes = self._signatures[short]
        except KeyError:
            raise AttributeError(f"no bound C function {short!r}") from None
        function = DLL[name]  # indexing makes a new function object every time
        function.restype = restype
        function.argtypes = list(argtypes)
        setattr(self, short, function)
        return function


_SIGNATURES: list[tuple[str, Any, tuple[Any, ...]]] = [
    # configuration and engine
    ("wasm_config_new", _P, ()),
    ("wasm_config_delete", None, (_P,)),
    ("wasm_engine_new_with_config", _P, (_P,)),
    ("wasm_engine_delete", None, (_P,)),
    ("wasmtime_config_consume_fuel_set", None, (_P, c_bool)),
    ("wasmtime_config_epoch_interruption_set", None, (_P, c_bool)),
    ("wasmtime_config_max_wasm_stack_set", None, (_P, c_size_t)),
    ("wasmtime_config_memory_reservation_set", None, (_P, c_uint64)),
    ("wasmtime_config_memory_guard_size_set", None, (_P, c_uint64)),
    ("wasmtime_config_wasm_threads_set", None, (_P, c_bool)),
    ("wasmtime_config_wasm_gc_set", None, (_P, c_bool)),
    ("wasmtime_config_wasm_exceptions_set", None, (_P, c_bool)),
    ("wasmtime_config_target_set", _P, (_P, c_char_p)),
    ("wasmtime_pooling_allocation_config_new", _P, ()),
    ("wasmtime_pooling_allocation_config_delete", None, (_P,)),
    ("wasmtime_pooling_allocation_config_total_core_instances_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_total_memories_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_max_memories_per_module_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_total_tables_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_max_tables_per_module_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_total_stacks_set", None, (_P, c_uint32)),
    ("wasmtime_pooling_allocation_config_max_memory_size_set", None, (_P, c_size_t)),
    ("wasmtime_pooling_allocation_config_table_elements_set", None, (_P, c_size_t)),
    ("wasmtime_pooling_allocation_config_linear_memory_keep_resident_set", None, (_P, c_size_t)),
    ("wasmtime_pooling_allocation_config_table_keep_resident_set", None, (_P, c_size_t)),
    ("wasmtime_pooling_allocation_strategy_set", None, (_P, _P)),
    ("wasmtime_engine_increment_epoch", None, (_P,)),
    # modules, linker, pre-instantiation
    ("wasmtime_module_new", _P, (_P, c_char_p, c_size_t, _PP)),
    ("wasmtime_module_validate", _P, (_P, c_char_p, c_size_t)),
    ("wasmtime_module_deserialize", _P, (_P, c_char_p, c_size_t, _PP)),
    ("wasmtime_module_deserialize_file", _P, (_P, c_char_p, _PP)),
    ("wasmtime_module_serialize", _P, (_P, POINTER(ByteVec))),
    ("wasmtime_module_exports", None, (_P, POINTER(ExportTypeVec))),
    ("wasmtime_module_delete", None, (_P,)),
    ("wasm_exporttype_name", POINTER(ByteVec), (_P,)),
    ("wasm_exporttype_type", _P, (_P,)),
    ("wasm_externtype_kind", c_uint8, (_P,)),
    ("wasm_externtype_as_functype_const", _P, (_P,)),
    ("wasm_functype_params", POINTER(ValTypeVec), (_P,)),
    ("wasm_functype_results", POINTER(ValTypeVec), (_P,)),
    ("wasm_exporttype_vec_delete", None, (POINTER(ExportTypeVec),)),
    ("wasmtime_module_imports", None, (_P, POINTER(ExportTypeVec))),  # same vector layout
    ("wasm_importtype_module", POINTER(ByteVec), (_P,)),
    ("wasm_importtype_name", POINTER(ByteVec), (_P,)),
    ("wasm_importtype_vec_delete", None, (POINTER(ExportTypeVec),)),
    ("wasmtime_linker_new", _P, (_P,)),
    ("wasmtime_linker_define_wasi", _P, (_P,)),
    ("wasmtime_linker_delete", None, (_P,)),
    ("wasmtime_linker_instantiate_pre", _P, (_P, _P, _PP)),
    ("wasmtime_instance_pre_delete", None, (_P,)),
    ("wasmtime_linker_allow_shadowing", None, (_P, c_bool)),
    ("wasmtime_linker_define_func_unchecked", _P, (_P, c_char_p, c_size_t, c_char_p, c_size_t,
                                                   _P, _P, _P, _P)),
    ("wasm_valtype_new", _P, (c_uint8,)),
    ("wasm_valtype_vec_new", None, (POINTER(ValTypeVec), c_size_t, _PP)),
    ("wasm_functype_new", _P, (POINTER(ValTypeVec), POINTER(ValTypeVec))),
    ("wasm_functype_delete", None, (_P,)),
    # host calls
    ("wasmtime_caller_context", _P, (_P,)),
    ("wasmtime_caller_export_get", c_bool, (_P, c_char_p, c_size_t, POINTER(Extern))),
    ("wasmtime_context_get_data", _P, (_P,)),
    ("wasmtime_memory_data", _P, (_P, _P)),
    ("wasmtime_trap_new", _P, (c_char_p, c_size_t)),
    # metered runs: the forwarding trampoline and preopened directories
    ("wasmtime_wat2wasm", _P, (c_char_p, c_size_t, POINTER(ByteVec))),
    ("wasmtime_linker_get", c_bool, (_P, _P, c_char_p, c_size_t, c_char_p, c_size_t,
                                     POINTER(Extern))),
    ("wasmtime_instance_new", _P, (_P, _P, _P, c_size_t, POINTER(Instance), _PP)),
    ("wasmtime_func_call_unchecked", _P, (_P, _P, _P, c_size_t, _PP)),
    ("wasi_config_preopen_dir", c_bool, (_P, c_char_p, c_char_p, c_bool)),
    # one run
    ("wasmtime_store_new", _P, (_P, _P, _P)),
    ("wasmtime_store_context", _P, (_P,)),
    ("wasmtime_store_limiter", None, (_P, c_int64, c_int64, c_int64, c_int64, c_int64)),
    ("wasmtime_store_delete", None, (_P,)),
    ("wasmtime_context_set_fuel", _P, (_P, c_uint64)),
    ("wasmtime_context_get_fuel", _P, (_P, POINTER(c_uint64))),
    ("wasmtime_context_set_epoch_deadline", None, (_P, c_uint64)),
    ("wasmtime_context_set_wasi", _P, (_P, _P)),
    ("wasi_config_new", _P, ()),
    ("wasi_config_delete", None, (_P,)),
    ("wasi_config_set_argv", c_bool, (_P, c_size_t, POINTER(c_char_p))),
    ("wasi_config_set_env", c_bool, (_P, c_size_t, POINTER(c_char_p), POINTER(c_char_p))),
    ("wasi_config_set_stdin_bytes", None, (_P, POINTER(ByteVec))),
    ("wasi_config_set_stdout_file", c_bool, (_P, c_char_p)),
    ("wasi_config_set_stderr_file", c_bool, (_P, c_char_p)),
    ("wasmtime_instance_pre_instantiate", _P, (_P, _P, POINTER(Instance), _PP)),
    ("wasmtime_instance_export_get", c_bool, (_P, POINTER(Instance), c_char_p, c_size_t,
                                              POINTER(Extern))),
    ("wasmtime_func_call", _P, (_P, _P, _P, c_size_t, _P, c_size_t, _PP)),
    ("wasmtime_memory_data_size", c_size_t, (_P, _P)),
    ("wasmtime_global_get", None, (_P, _P, _P)),
    # results
    ("wasm_byte_vec_new", None, (POINTER(ByteVec), c_size_t, c_char_p)),
    ("wasm_byte_vec_delete", None, (POINTER(ByteVec),)),
    ("wasmtime_error_message", None, (_P, POINTER(ByteVec))),
    ("wasmtime_error_exit_status", c_bool, (_P, POINTER(c_int))),
    ("wasmtime_error_delete", None, (_P,)),
    ("wasm_trap_message", None, (_P, POINTER(ByteVec))),
    ("wasmtime_trap_code", c_bool, (_P, POINTER(c_uint8))),
    ("wasm_trap_delete", None, (_P,)),
]
C: Any = _Bindings({name.removeprefix("wasmtime_"): (name, restype, argtypes)
                    for name, restype, argtypes in _SIGNATURES})


def _vec_text(vec: Any) -> str:
    text = ctypes.string_at(vec.data, vec.size) if vec.size else b""
    C.wasm_byte_vec_delete(ctypes.byref(vec))
    return text.rstrip(b"\0").decode("utf-8", "replace")


def take_error(error: int) -> tuple[str, int | None]:
    """Message and WASI exit status of an owned `wasmtime_error_t*`, which is freed."""
    status = c_int()
    exited = C.error_exit_status(error, ctypes.byref(status))
    vec = ByteVec()
    C.error_message(error, ctypes.byref(vec))
    C.error_delete(error)
    return _vec_text(vec), (status.value if exited else None)


def take_trap(trap: int) -> tuple[str, int | None]:
    """Message and trap code (`wasmtime_trap_code_t`) of an owned `wasm_trap_t*`, freed."""
    code = c_uint8()
    known = C.trap_code(trap, ctypes.byref(code))
    vec = ByteVec()
    C.wasm_trap_message(trap, ctypes.byref(vec))
    C.wasm_trap_delete(trap)
    return _vec_text(vec), (code.value if known else None)

"""The fast path's native run: `_native.c`, built beside this module by
`scripts/build_native.py`, makes one run a single C call instead of about fifteen
ctypes calls, and serves the guest's standard streams (`STDIO`: counted host calls, output
stopped at the cap as it is written). Optional: `NATIVE_RUN` and `STDIO` are None when
the library is not built, cannot be loaded, or `STOCKADE_FASTPATH_NATIVE=0`; `execute`
then runs the Python version.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from pathlib import Path

from ._capi import DLL, Extern

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CALL_NAMES", "CALL_POLL", "EPOCH_DEADLINE", "EpochWatch", "NATIVE_RUN", "STDIO",
           "RunIn", "RunOut", "RunPlanC", "WATCH", "WATCH_CANCELLED", "WATCH_TIMEOUT",
           "RunState", "LAYOUT", "MAX_STRINGS", "RUN_OK",
           "RUN_FUEL", "RUN_WASI_FILES", "STOP_STDOUT", "STOP_STDERR", "STOP_HOSTCALLS",
           "RUN_WASI", "RUN_NO_START", "RUN_BAD_STRINGS", "RUN_NO_TRIPWIRE", "RUN_NO_DEADLINE",
           "LIBRARY",
           "TripState", "TRIP"]

LIBRARY = Path(__file__).with_name("libstockade_fastrun.so")
MAX_STRINGS = 1024  # argv and environment entries the C side takes (MAX_STRINGS there)
INLINE_OUTPUT = 8192  # a stream's bytes kept in its `RunState` (INLINE_OUTPUT there)
RUN_OK, RUN_FUEL, RUN_WASI_FILES, RUN_WASI, RUN_NO_START = 0, 1, 2, 3, 4
RUN_BAD_STRINGS = 6  # an argv or environment block that is malformed or not UTF-8
RUN_NO_TRIPWIRE = 7  # a plan with a tripwire, a module without its page
RUN_NO_DEADLINE = 8  # the deadline thread could not be started

# In the order of the C side's function table (its `enum`).
_FUNCTIONS = (
    "wasmtime_store_new", "wasmtime_store_context", "wasmtime_store_limiter",
    "wasmtime_store_delete", "wasmtime_context_set_fuel", "wasmtime_context_get_fuel",
    "wasmtime_context_set_epoch_deadline", "wasmtime_context_set_wasi", "wasi_config_new",
    "wasi_config_delete", "wasi_config_set_argv", "wasi_config_set_env",
    "wasi_config_set_stdin_bytes", "wasi_config_set_stdout_file",
    "wasi_config_set_stderr_file", "wasm_byte_vec_new", "wasmtime_instance_pre_instantiate",
    "wasmtime_instance_export_get", "wasmtime_func_call", "wasmtime_memory_data_size",
    "wasmtime_error_delete", "wasmtime_caller_context", "wasmtime_context_get_data",
    "wasmtime_caller_export_get", "wasmtime_memory_data", "wasmtime_trap_new",
    "wasmtime_error_new", "wasmtime_engine_increment_epoch",
    "wasmtime_store_epoch_deadline_callback", "wasmtime_global_get",
)


class RunPlanC(ctypes.Structure):
    """`run_plan` of `_native.c`: what a `RunPlan` fixes for all its runs (built once
    by `FastEngine.plan`; `max_hostcalls` 2**64-1 and `max_output` -1 mean unlimited, as
    -1 does for the store's limits after `max_memory`)."""

    _fields_ = [
        ("pre", c_void_p), ("max_memory", c_int64), ("fuel", c_uint64),
        ("has_fuel", c_int32), ("capture_stderr", c_int32),
        ("argv", c_char_p), ("argc", c_size_t), ("argv_len", c_size_t),
        ("max_output", c_int64), ("max_hostcalls", c_uint64),
        ("owned_stdio", c_int32), ("tripwire", c_int32),
        ("max_table_elements", c_int64), ("max_instances", c_int64), ("max_tables", c_int64),
        ("max_memories", c_int64),
    ]


class RunIn(ctypes.Structure):
    """`run_in` of `_native.c`: what one run is given besides its plan (strings
    NUL-terminated); `state` is the slot's `RunState`, reset by the native run."""

    _fields_ = [
        ("engine", c_void_p), ("state", c_void_p), ("plan", c_void_p),
        ("deadline", c_uint64), ("deadline_ns", c_int64),
        ("names", c_char_p), ("values", c_char_p),
        ("envc", c_size_t), ("names_len", c_size_t), ("values_len", c_size_t),
        ("stdin_data", c_char_p), ("stdin_len", c_size_t),
        ("out_path", c_char_p), ("err_path", c_char_p),
        ("cap", POINTER(c_int64)), ("out_fd", c_int32), ("err_fd", c_int32),
        ("trip", c_void_p), ("watch", c_void_p),
    ]


class RunOut(ctypes.Structure):
    """`run_out` of `_native.c`: owned error and trap pointers, sizes, status, the
    call's wall and thread CPU time, the sizes of the guest's output files, and the
    refused grows' global (pages, `engine.grow`)."""

    _fields_ = [
        ("error", c_void_p), ("trap", c_void_p), ("memory_bytes", c_uint64),
        ("fuel_left", c_uint64), ("called", c_int32), ("status", c_int32),
        ("wall_ns", c_uint64), ("cpu_ns", c_uint64), ("out_size", c_int64),
        ("err_size", c_int64), ("grow_refused", c_int64),
    ]


# The owned calls `RunState.calls` counts, by index (`_native.c` CALL_*; poll_oneoff is
# counted by `_poll.py`).
CALL_NAMES = ("fd_write", "fd_read", "fd_close", "random_get", "poll_oneoff", "fd_sync",
              "fd_datasync", "sock_accept", "sock_recv", "sock_send", "sock_shutdown")
CALL_POLL = 4


class RunState(ctypes.Structure):
    """`run_state` of `_native.c`: what the owned standard streams of one run share with
    Python (the store's data points at it). `stop` says why a host call stopped the
    guest: 1 stdout or 2 stderr past the output cap, 3 the host-call budget.
    `memory_base` is the address of the guest's `memory` once instantiated (else None),
    `trip` the address of the slot's `TripState`, `watch` an epochs run's `EpochWatch` (set
    by the native run; the owned calls look at their deadlines).
    A stream's first `INLINE_OUTPUT` bytes are kept in `out_inline` / `err_inline`; once
    it outgrows them, all of it is in its file (`out_spilled` / `err_spilled`)."""

    _fields_ = [
        ("out_fd", c_int32), ("err_fd", c_int32), ("capture_err", c_int32), ("stop", c_int32),
        ("cap", c_int64), ("out_size", c_int64), ("err_size", c_int64),
        ("hostcalls", c_uint64), ("max_hostcalls", c_uint64),
        ("stdin_data", c_char_p), ("stdin_len", c_uint64), ("stdin_pos", c_uint64),
        ("closed", c_int32 * 3),
        ("calls", c_uint64 * len(CALL_NAMES)),
        ("memory_base", c_void_p),
        ("trip", c_void_p),
        ("watch", c_void_p),
        ("out_spilled", c_int32), ("err_spilled", c_int32),
        ("out_inline", c_uint8 * INLINE_OUTPUT), ("err_inline", c_uint8 * INLINE_OUTPUT),
    ]


STOP_STDOUT, STOP_STDERR, STOP_HOSTCALLS = 1, 2, 3


class DueEntry(ctypes.Structure):
    """`due_entry` of `_native.c`, inside the structures below: a run's deadline on the
    library's deadline thread's list, that thread's own."""

    _fields_ = [("deadline_ns", c_int64), ("next", c_void_p), ("prev", c_void_p),
                ("target", c_void_p), ("kind", c_int32), ("listed", c_int32)]


class TripState(ctypes.Structure):
    """`trip_state` of `_native.c`: one run's tripwire (`engine.tripwire.Tripwire`)."""

    _fields_ = [("lock", c_int32), ("fired", c_int32), ("revoked", c_int32),
                ("reserved", c_int32), ("page", c_void_p), ("due", DueEntry)]


class EpochWatch(ctypes.Structure):
    """`epoch_watch` of `_native.c`: the env of `EPOCH_DEADLINE`, a sandbox run's epoch
    deadline decided by the clock (`sandbox/cancel.py`). `deadline_ns` is monotonic (-1:
    none); `reason` is set when it stopped the guest (`WATCH_TIMEOUT`,
    `WATCH_CANCELLED`)."""

    _fields_ = [("deadline_ns", c_int64), ("cancelled", c_int32), ("reason", c_int32),
                ("due", DueEntry)]


WATCH_TIMEOUT, WATCH_CANCELLED = 1, 2

# What `stockade_fast_init` checks against its own `layout`: each shared structure's
# field offsets, then its size.
LAYOUT = tuple(offset for struct in (RunState, RunPlanC, RunIn, RunOut, DueEntry, TripState,
                                     EpochWatch)
               for offset in (*(getattr(struct, name).offset for name, *_ in struct._fields_),
                              ctypes.sizeof(struct)))


def _load() -> Any:
    if os.environ.get("STOCKADE_FASTPATH_NATIVE", "1") == "0" or not LIBRARY.exists():
        return None
    try:
        library = ctypes.CDLL(str(LIBRARY))
    except OSError:
        return None
    addresses = (c_void_p * len(_FUNCTIONS))(
        *(ctypes.cast(DLL[name], c_void_p).value for name in _FUNCTIONS))
    init = library.stockade_fast_init
    init.argtypes = [POINTER(c_void_p), c_size_t, c_size_t, POINTER(c_size_t), c_size_t]
    init.restype = c_int32
    if init(addresses, len(_FUNCTIONS), Extern.of.offset, (c_size_t * len(LAYOUT))(*LAYOUT),
            len(LAYOUT)) != 0:
        return None
    return library


def _trip_functions(library: Any) -> dict[str, Any]:
    functions = {}
    for name in ("fire", "arm", "disarm", "undue"):
        function = getattr(library, f"stockade_trip_{name}")
        function.argtypes = [c_void_p, c_void_p] if name == "arm" else [c_void_p]
        function.restype = None
        functions[name] = function
    due = functions["due"] = library.stockade_trip_due
    due.argtypes, due.restype = [c_void_p, c_int64], c_int32
    return functions


def _watch_functions(library: Any) -> dict[str, Any]:
    start, stop = library.stockade_watch_start, library.stockade_watch_stop
    start.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p, c_int64]
    start.restype = c_int32
    stop.argtypes, stop.restype = [c_void_p], None
    return {"start": start, "stop": stop}


_LIBRARY: Any = _load()
NATIVE_RUN: Any = None
# Host functions (name -> address) of the owned calls (the standard streams, their syncs,
# random_get, the sock_* calls on descriptors that are no sockets), or None without the
# library: the fast path then counts no host calls and caps output with the ticker.
STDIO: dict[str, int] | None = None
# The tripwire's functions by name (fire, arm, disarm, due, undue; each takes a
# `TripState`'s address, arm also the page's, due a monotonic deadline in ns), or None
# without the library.
TRIP: dict[str, Any] | None = None
# A fast-path run's deadline on an epochs engine, for the ctypes run (the native run keeps
# it itself): start (store, context, `EpochWatch`, engine, monotonic ns; 0 or -1) and
# stop (`EpochWatch`), or None without the library.
WATCH: dict[str, Any] | None = None
# The address of the epoch-deadline callback deciding by the clock (env: an
# `EpochWatch`), or None without the library.
EPOCH_DEADLINE: int | None = None
if _LIBRARY is not None:
    NATIVE_RUN = _LIBRARY.stockade_fast_run
    NATIVE_RUN.argtypes, NATIVE_RUN.restype = [POINTER(RunIn), POINTER(RunOut)], c_int32
    STDIO = {name: ctypes.cast(getattr(_LIBRARY, f"stockade_{name}"), c_void_p).value or 0
             for name in CALL_NAMES if name != "poll_oneoff"}
    TRIP = _trip_functions(_LIBRARY)
    WATCH = _watch_functions(_LIBRARY)
    EPOCH_DEADLINE = ctypes.cast(_LIBRARY.stockade_epoch_deadline, c_void_p).value

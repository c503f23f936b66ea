"""The fast path's `proc_exit`: the guest's own exit code, whatever its value.

wasmtime's WASI fails `proc_exit` with a code of 126 or more (an error the run read as a
trap, 134), where WASI's exit code is a u32 and programs exit with up to 255 (and -1).
This one keeps the code on the run's `RunSlot` and stops the guest with a trap; the
run's verdict reads the code (`_run.execute`), as the sandbox's does its own
(`hostcalls.interpose`). A Python callback, entered at most once per run, on the main
linker and the metered one alike.
"""

from __future__ import annotations

import ctypes

from ._capi import C
from ._poll import CALLBACK_TYPE, define_func
from ._run import RunSlot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["define_exit"]

_EXITED = b"stockade: the guest exited"
_U32 = 0xFFFFFFFF


def define_exit(linker: int) -> None:
    """Define WASI's `proc_exit` in `linker` (shadowing allowed) as this one."""
    define_func(linker, b"proc_exit", ("i32",), ctypes.cast(_CALLBACK, ctypes.c_void_p),
                results=())


def _proc_exit(_env: Any, caller: Any, args: Any, _count: int) -> int:
    try:
        slot = RunSlot.live.get(C.context_get_data(C.caller_context(caller)) or 0)
        if slot is not None:
            slot.exit_code = args[0].i32 & _U32
    except BaseException:  # noqa: BLE001 - never unwind into wasmtime; the trap stops it
        pass
    return int(C.trap_new(_EXITED, len(_EXITED)))


_CALLBACK = CALLBACK_TYPE(_proc_exit)  # one object, alive as long as the module

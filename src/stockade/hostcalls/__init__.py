"""Host calls Stockade owns: metered WASI functions, budgets, deadlines and quotas.

Names are imported on first use: `interpose` (and `abi`) load wasmtime-py, which the
C-API fast path, using `poll` alone, must not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .abi import INTERPOSED, MODULE, PREVIEW1_FUNCTIONS
    from .interpose import LINKER_NAME, build_linker, metered
    from .meter import Meter

__all__ = ["INTERPOSED", "MODULE", "PREVIEW1_FUNCTIONS", "LINKER_NAME", "build_linker",
           "metered", "Meter"]

_EXPORTS = {"INTERPOSED": "abi", "MODULE": "abi", "PREVIEW1_FUNCTIONS": "abi",
            "LINKER_NAME": "interpose", "build_linker": "interpose", "metered": "interpose",
            "Meter": "meter"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)

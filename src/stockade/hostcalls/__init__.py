"""Host calls Stockade owns: metered WASI functions, budgets, deadlines and quotas.

Names are imported on first use: `interpose` (and `abi`) load wasmtime-py, which the
C-API fast path, using `poll` alone, must not pay for.
"""

from __future__ import annotations

from ..lazyexports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .abi import INTERPOSED, MODULE, PREVIEW1_FUNCTIONS
    from .interpose import LINKER_NAME, build_linker, metered
    from .meter import Meter

__all__ = ["INTERPOSED", "MODULE", "PREVIEW1_FUNCTIONS", "LINKER_NAME", "build_linker",
           "metered", "Meter"]

_EXPORTS = {"INTERPOSED": "abi", "MODULE": "abi", "PREVIEW1_FUNCTIONS": "abi",
            "LINKER_NAME": "interpose", "build_linker": "interpose", "metered": "interpose",
            "Meter": "meter"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""The in-process sandbox: `Sandbox(policy).run(module, invocation) -> Result`.

`Sandbox` (wasmtime-py) is imported on first use: the C-API backend (`capi`) and the
backend choice (`backend`) live here too and must not load wasmtime-py.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .sandbox import Sandbox

__all__ = ["Sandbox"]


def __getattr__(name: str) -> Any:
    if name != "Sandbox":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .sandbox import Sandbox

    return Sandbox

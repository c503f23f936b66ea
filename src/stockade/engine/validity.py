"""`engine_verdict`: whether wasmtime would load a module, and with which engine.

Asked of wasmtime's own validator, not of a reader here or of its error's words: a
module needs Wasm GC or exception handling (`EngineConfig.gc`, a policy's `wasm_gc`)
when the default engine refuses it and the same engine with both proposals accepts it.
`stockade inspect` says so before a run, and a refused load says how to allow it. The
type and tag sections alone missed modules using `anyref`, `i31ref`, `exnref`, a bottom
type or a tagless `try_table`; matching wasmtime's messages missed a recursion group
("rec group usage requires `gc` proposal"). Validating decodes every body but compiles
and runs nothing; wasmtime bounds every count itself. One implementation, through the
C API (`fastpath._engine.refusal`), for every caller: a confined worker cannot import
wasmtime-py once it runs, and this module is imported with the compiler.
"""

from __future__ import annotations

from typing import NamedTuple

from .config import EngineConfig
from .fastpath._engine import needs_gc, refusal
from .traps import describe_load_message

__all__ = ["EngineVerdict", "engine_verdict", "needs_gc"]


class EngineVerdict(NamedTuple):
    """`needs_gc`: valid only with `wasm_gc`; `error`: wasmtime's refusal (one line)
    under the default engine when the GC engine refuses it too, else None."""

    needs_gc: bool
    error: str | None


def engine_verdict(data: bytes) -> EngineVerdict:
    """What wasmtime's validator says of `data` under the default engine's features,
    then, when those refuse it, with Wasm GC and exception handling allowed."""
    refused = refusal(EngineConfig(), data)
    if refused is None:
        return EngineVerdict(False, None)
    return EngineVerdict(True, None) if needs_gc(data) else \
        EngineVerdict(False, describe_load_message(refused))

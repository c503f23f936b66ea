"""`review`: wasmtime's verdict on a module under review, and its code's price, in a
bounded child process.

`inspect`, `check` and `sign` read hostile files without running them, yet asking
wasmtime's validator costs memory the file's size does not bound: it kept ~16 bytes per
byte of a type section of distinct function types (478 MiB of them: 8.4 GB and 79 s,
or under an address-space limit an abort with a Rust backtrace, exit 134), and pricing
their code (`codework`) read them in Python. So both run where `stockade run` checks and
compiles a module: in the compiler's child (`engine.compiler.run_child`), under the
default profile's compile budgets (120 s of CPU, 768 MiB of address space beyond what
the child maps, or less under a lower `RLIMIT_AS` this process was started with). A
module that meets one is refused in one line naming it (126). A
process that compiles in place (a bounded worker, `compiles_in_child` False) asks here:
its own limits bound it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..codework import Work

__all__ = ["Review", "review", "BOUND"]

BOUND = "the default profile's compile budget, which bounds reviewing a module"


class Review(NamedTuple):
    """wasmtime's verdict (`engine.validity.EngineVerdict`'s fields: valid only with
    Wasm GC; its refusal in one line, else None) and the code's `Work` when asked and
    the module is valid, else None."""

    needs_gc: bool
    error: str | None
    work: list[Work] | None


def review(data: bytes, name: str, price: bool = True) -> Review:
    """`engine_verdict` of module `data` (shown as `name`) and, when `price` and wasmtime
    accepts it, its `code_work`, within the default profile's compile budgets. Raises
    ModuleError naming the budget met, StockadeError when no child starts."""
    from ..engine.compiler import child_refusal, compiles_in_child, run_child
    from ..engine.guard import CompileGuard
    from ..policy.profiles import PROFILES

    if not compiles_in_child():
        from ..codework import code_work
        from ..engine.validity import engine_verdict

        verdict = engine_verdict(data)
        return Review(*verdict, code_work(data) if price and verdict.error is None else None)
    guard = CompileGuard.for_limits(PROFILES["default"])
    done = run_child({"task": "review", "price": price}, data, name, guard, "validating")
    if done.returncode != 0:
        raise child_refusal(done, name, guard, "validating", BOUND)
    answer = json.loads(done.stdout)
    work = answer["work"]
    return Review(answer["needs_gc"], answer["error"],
                  None if work is None else [(units, sites, moved)
                                             for units, sites, moved in work])

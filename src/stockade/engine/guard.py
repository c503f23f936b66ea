"""`CompileGuard`: refuse modules whose size or shape would make compiling them an attack.

Compilation happens before any fuel or deadline applies, and Cranelift's register
allocation is superlinear in locals kept live through one huge function: a 1 MB module
can cost seconds of CPU. So the policy bounds the module file, the largest function body
and the locals of one function; the check reads only section and body headers. Data
segments larger than the memory limit are refused too: such a module can never be
instantiated, and compiling it builds memory images of that size in the host.

Per-function bounds do not bound their sum (three bodies just under them cost ~30 s of
CPU; 300,000 empty functions, 1.2 MB, cost ~24 s and ~1.8 GB), so the guard also predicts
the whole module's compile cost in CPU (`compile_cost`) and in memory (`compile_memory`)
and refuses it over a budget. The CPU budget follows the policy's timeout (twice it: a
module may cost at compile time about what the policy lets it spend running), never
below `COMPILE_FLOOR` (so CPython compiles under any timeout), `COMPILE_CEILING` without
a timeout. The memory budget is `COMPILE_MEMORY` plus the guest's memory limit. A module
found in the AoT cache is not compiled, so it is not charged (the loader checks the
cache first): CPython for WASI, ~10 s predicted, compiles under any timeout, and once
cached loads for nothing. The prediction is a model, refusing before any compile; the
bound is the compile's child process (`engine.compiler`): `RLIMIT_CPU` of the CPU
budget, `RLIMIT_AS` of twice the memory budget, killed past
`compilecost.load_deadline` (an isolated worker, its own child, has that deadline too).

The model, fitted on a 2-core x86-64 machine (Cranelift, wasmtime 50, worst-case bodies
of locals all live to the end; see tests/engine/test_guard.py): CPU seconds =
`PER_FUNCTION` + `PER_BYTE` x body bytes + `PER_BYTE_LOCAL` x body bytes x locals, summed
over functions; memory = `MEMORY_PER_FUNCTION` x functions + `MEMORY_PER_BYTE` x body
bytes. Measured: CPython 3.12 for WASI 9.1 s (predicted 10.3), QuickJS 1.5 s (1.6), three
511 KiB bodies of 1,999 locals 32 s (34), one 4 MiB body of 200 locals 14.6 s (14.7),
60,000 empty functions 2.7 s and 396 MB RSS (4.2 s, 352 MiB + the interpreter). Work
the body bytes do not show (a 3-byte `struct.new_default` of a 10,000-field struct;
thousands of `table.copy`s or result blocks in one body, superlinear) is counted by
`codework.code_work` and priced in `compilecost`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..binary import MalformedModule, code_shape, data_size, sections
from ..codework import Work, code_work
from ..compilecost import (
    COMPILE_CEILING,
    COMPILE_FLOOR,
    COMPILE_HEAVY,
    COMPILE_MEMORY,
    compile_budget,
    compile_cost,
    compile_memory,
    load_deadline,
    memory_budget,
)
from ..errors import ModuleError
from ..policy.units import format_size

if TYPE_CHECKING:
    from ..policy import Limits

__all__ = ["CompileGuard", "code_shape", "compile_cost", "compile_memory", "data_size",
           "compile_budget", "memory_budget", "load_deadline", "COMPILE_FLOOR",
           "COMPILE_CEILING", "COMPILE_HEAVY", "COMPILE_MEMORY"]

@dataclass(frozen=True)
class CompileGuard:
    """Bounds checked before a module is compiled (sizes in bytes)."""

    max_module_size: int
    max_function_size: int
    max_locals: int
    max_data_size: int | None = None
    compile_budget: float | None = None
    memory_budget: int | None = None

    @classmethod
    def for_limits(cls, limits: Limits) -> CompileGuard:
        """The guard of a policy's limits, compile budgets included."""
        return cls(limits.max_module_size, limits.max_function_size, limits.max_locals,
                   limits.max_memory, compile_budget(limits.timeout),
                   memory_budget(limits.max_memory))

    def _over_budget(self, shape: list[tuple[int, int]]) -> bool:
        return ((self.compile_budget is not None
                 and compile_cost(shape) > self.compile_budget)
                or (self.memory_budget is not None
                    and compile_memory(shape) > self.memory_budget))

    def check_size(self, size: int, name: str) -> None:
        """Refuse a module file larger than `max_module_size` before reading it."""
        if size > self.max_module_size:
            raise ModuleError(
                f"{name}: {format_size(size)} is larger than this policy's module size limit "
                f"of {format_size(self.max_module_size)}"
            )

    def check_code(self, data: bytes, name: str,
                   work: list[Work] | None = None) -> list[Work]:
        """Refuse function bodies or local counts that would make compilation explode, and
        data segments that could never fit in the memory limit. Returns the module's
        `code_work`; `work` is that of a module with the same code but for additions that
        do no such work (the tripwire's probes), spared decoding it again."""
        if self.max_data_size is not None:
            segments = data_size(data)
            if segments > self.max_data_size:
                raise ModuleError(
                    f"{name}: its data segments hold {format_size(segments)}, more than "
                    f"this policy's memory limit of {format_size(self.max_data_size)}: it "
                    "could never be instantiated"
                )
        try:  # lenient readers stop at MAX_SECTIONS: past it, code would go unpriced
            for _ in sections(data):
                pass
        except MalformedModule as exc:
            raise ModuleError(f"{name}: {exc}; refused") from None
        shape = code_shape(data)
        for index, (body, locals_count) in enumerate(shape):
            if body > self.max_function_size:
                raise ModuleError(
                    f"{name}: function {index} has a {format_size(body)} body, over this "
                    f"policy's limit of {format_size(self.max_function_size)} (compile cost)"
                )
            if locals_count > self.max_locals:
                raise ModuleError(
                    f"{name}: function {index} declares {locals_count} locals, over this "
                    f"policy's limit of {self.max_locals} (compile cost)"
                )
        # The shape alone is a lower bound: a module over budget by it is refused before
        # its code is decoded (seconds of Python on a large one).
        if work is None:
            work = [] if self._over_budget(shape) else code_work(data)
        cost = compile_cost(shape, work)
        if self.compile_budget is not None and cost > self.compile_budget:
            raise ModuleError(
                f"{name}: compiling it would cost about {cost:.0f} s of CPU, over this "
                f"policy's compile budget of {self.compile_budget:g} s (twice the timeout, "
                f"at least {COMPILE_FLOOR:g} s; {len(shape)} functions); raise the timeout "
                "(--timeout, or `timeout` in the policy) to allow it"
            )
        memory = compile_memory(shape, work)
        if self.memory_budget is not None and memory > self.memory_budget:
            raise ModuleError(
                f"{name}: compiling its {len(shape)} functions would take about "
                f"{format_size(memory)} of host memory, over this policy's compile memory "
                f"budget of {format_size(self.memory_budget)} ({format_size(COMPILE_MEMORY)} "
                "plus the memory limit); raise the memory limit (--max-memory) to allow it"
            )
        return work

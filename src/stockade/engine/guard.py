"""`CompileGuard`: refuse modules whose size or shape would make compiling them an attack.

Compilation happens before any fuel or deadline applies, and Cranelift's register
allocation is superlinear in locals kept live through one huge function: a 1 MB module
can cost seconds of CPU. So the policy bounds the module file, the largest function body
and the locals of one function; the check reads only section and body headers. Data
segments larger than the memory limit are refused too: such a module can never be
instantiated, and compiling it builds memory images of that size in the host.

Per-function bounds do not bound their sum (three bodies just under them cost ~30 s of
CPU), so the guard also predicts the whole module's compile cost, `compile_cost`, and
refuses it over a budget: the larger of `COMPILE_FLOOR` and the policy's timeout (a
module may cost at compile time at most what the policy lets it spend running), or
`COMPILE_CEILING` without a timeout. A compile cannot be interrupted inside wasmtime,
so this prediction is the load deadline of an in-process run.

The model, fitted on a 2-core x86-64 machine (Cranelift, wasmtime 50, worst-case bodies
of locals all live to the end; see tests/engine/test_guard.py): CPU seconds =
`PER_BYTE` x body bytes + `PER_BYTE_LOCAL` x body bytes x locals, summed over functions.
Measured: CPython 3.12 for WASI 9.1 s (predicted 9.5), QuickJS 1.6 s (1.5), three 511 KiB
bodies of 1,999 locals 32 s (34), one 4 MiB body of 200 locals 14.6 s (14.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..binary import code_shape, data_size
from ..errors import ModuleError
from ..policy.units import format_size

if TYPE_CHECKING:
    from ..policy import Limits

__all__ = ["CompileGuard", "code_shape", "compile_cost", "data_size", "compile_budget",
           "COMPILE_FLOOR", "COMPILE_CEILING"]

PER_BYTE = 1.5e-6  # CPU seconds per byte of function body
PER_BYTE_LOCAL = 1.0e-8  # CPU seconds per byte of body per declared local
# Budget of predicted CPU seconds whatever the timeout: CPython for WASI (9.5 s predicted)
# loads under any timeout; three bodies just under the default per-function limits do not.
COMPILE_FLOOR = 15.0
COMPILE_CEILING = 600.0  # without a timeout: the permissive profile's timeout


def compile_cost(shape: list[tuple[int, int]]) -> float:
    """Predicted CPU seconds Cranelift spends compiling functions of this `code_shape`."""
    return sum(body * (PER_BYTE + PER_BYTE_LOCAL * locals_count)
               for body, locals_count in shape)


def compile_budget(timeout: float | None) -> float:
    """The compile budget (predicted CPU seconds) of a policy with this timeout."""
    return COMPILE_CEILING if timeout is None else max(COMPILE_FLOOR, timeout)


@dataclass(frozen=True)
class CompileGuard:
    """Bounds checked before a module is compiled (sizes in bytes)."""

    max_module_size: int
    max_function_size: int
    max_locals: int
    max_data_size: int | None = None
    compile_budget: float | None = None

    @classmethod
    def for_limits(cls, limits: Limits) -> CompileGuard:
        """The guard of a policy's limits, compile budget included."""
        return cls(limits.max_module_size, limits.max_function_size, limits.max_locals,
                   limits.max_memory, compile_budget(limits.timeout))

    def check_size(self, size: int, name: str) -> None:
        """Refuse a module file larger than `max_module_size` before reading it."""
        if size > self.max_module_size:
            raise ModuleError(
                f"{name}: {format_size(size)} is larger than this policy's module size limit "
                f"of {format_size(self.max_module_size)}"
            )

    def check_code(self, data: bytes, name: str) -> None:
        """Refuse function bodies or local counts that would make compilation explode, and
        data segments that could never fit in the memory limit."""
        if self.max_data_size is not None:
            segments = data_size(data)
            if segments > self.max_data_size:
                raise ModuleError(
                    f"{name}: its data segments hold {format_size(segments)}, more than "
                    f"this policy's memory limit of {format_size(self.max_data_size)}: it "
                    "could never be instantiated"
                )
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
        cost = compile_cost(shape)
        if self.compile_budget is not None and cost > self.compile_budget:
            raise ModuleError(
                f"{name}: compiling it would cost about {cost:.0f} s of CPU, over this "
                f"policy's compile budget of {self.compile_budget:.0f} s (the larger of "
                f"{COMPILE_FLOOR:.0f} s and the timeout); raise the timeout (--timeout, or "
                "`timeout` in the policy) to allow it"
            )

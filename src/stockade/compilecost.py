"""The compile cost model: predicted CPU and memory of compiling a module, and the
budgets a policy grants (see `engine.guard`, which enforces them, for the figures).

A leaf module (standard library only), so a parent that never compiles (the isolated
worker's parent) can size its load deadline without importing the engine.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["compile_cost", "compile_memory", "compile_budget", "memory_budget",
           "load_deadline", "compile_deadline", "COMPILE_FLOOR", "COMPILE_CEILING",
           "COMPILE_HEAVY", "COMPILE_MEMORY"]

PER_FUNCTION = 70e-6  # CPU seconds per function, whatever its body (measured 45-80 µs)
PER_BYTE = 1.5e-6  # CPU seconds per byte of function body
PER_BYTE_LOCAL = 1.0e-8  # CPU seconds per byte of body per declared local
MEMORY_PER_FUNCTION = 6 * 1024  # bytes of host memory per function (measured ~6 KB)
MEMORY_PER_BYTE = 16  # bytes of host memory per byte of body (the code it emits)
# GC work (`codework`), in units of one numeric field initialised, per function: CPU
# seconds PER_GC_UNIT x units + PER_GC_UNIT_SQUARED x units^2 (100 struct.new_default of
# a 10,000-field v128 struct, 1M units in one function: 8-16 s measured, 11 s predicted;
# 10,000 reference struct.get, 250k units: 2.2 s, 2.2 s); memory MEMORY_PER_GC_UNIT x
# units of the COMPILE_THREADS largest functions (what is compiled at once; 307 MB
# measured for 250k units).
PER_GC_UNIT = 8e-6
PER_GC_UNIT_SQUARED = 3.2e-12
MEMORY_PER_GC_UNIT = 1536
COMPILE_THREADS = 2
# Heavy sites (`codework`), per function: CPU seconds PER_SITE_SQUARED x sites^2 (30,000
# `if`s with results: 15 s measured, 15 s predicted; 10,000 `table.copy`s: 25 s, 25 s;
# CPython for WASI: 0.003 s predicted in all).
PER_SITE_SQUARED = 1.7e-8
# and memory MEMORY_PER_SITE_SQUARED x sites^2 of the COMPILE_THREADS largest (25,000
# `try_table`s with results in one body: 2.5 GiB measured, 2.3 GiB predicted).
MEMORY_PER_SITE_SQUARED = 4
# Values moved by calls, throws, branches and typed blocks (`codework`), per function: CPU
# seconds PER_VALUE x values + PER_VALUE_SQUARED x values^2 (400 call pairs moving 1,000
# values each, 800k values: 5.8-7.3 s measured, 6.2 predicted; 1.6M: 18.6 s, 20 s;
# 20,000 pairs of 16, 640k: 3.3 s, 4.4 s; 40,000 pairs of 4: 1.0 s, 1.6 s; CPython for
# WASI, 255k values over 11,000 functions: 0.8 s predicted), memory MEMORY_PER_VALUE x
# values of the COMPILE_THREADS largest (800k: 420 MB above the interpreter; 1.6M:
# 760 MB).
PER_VALUE = 3e-6
PER_VALUE_SQUARED = 6e-12
MEMORY_PER_VALUE = 512
# Budget of predicted CPU seconds however short the timeout: CPython for WASI (9-10 s
# measured, 11.7 s predicted with its code work and 5,542 trampolines) compiles cold
# under any timeout (`stockade python --timeout 1s`); a 1 s timeout buys no more than
# this (it bought 15 s before the per-function term).
COMPILE_FLOOR = 13.0
COMPILE_RATIO = 2.0  # compile CPU seconds per second of timeout
COMPILE_CEILING = 600.0  # without a timeout: the permissive profile's timeout
COMPILE_HEAVY = 15.0  # a compile worth a finding in `stockade inspect`
COMPILE_MEMORY = 256 * 1024**2  # host memory any compile may use, besides the guest's
_LOAD_SLACK = 10.0  # load deadline beyond the budget: reading, hashing, a noisy machine


def compile_cost(shape: list[tuple[int, int]], work: Sequence[tuple[int, float, int]] = ()
                 ) -> float:
    """Predicted CPU seconds Cranelift spends compiling functions of this `code_shape`
    doing this `code_work` ((GC units, heavy sites, values moved) per function)."""
    return (sum(PER_FUNCTION + body * (PER_BYTE + PER_BYTE_LOCAL * locals_count)
                for body, locals_count in shape)
            + sum(units * (PER_GC_UNIT + PER_GC_UNIT_SQUARED * units)
                  + PER_SITE_SQUARED * sites * sites
                  + values * (PER_VALUE + PER_VALUE_SQUARED * values)
                  for units, sites, values in work))


def compile_memory(shape: list[tuple[int, int]], work: Sequence[tuple[int, float, int]] = ()
                   ) -> int:
    """Predicted bytes of host memory compiling functions of this `code_shape` doing this
    `code_work` takes."""
    largest = heapq.nlargest(COMPILE_THREADS, (units for units, _, _ in work))
    busiest = heapq.nlargest(COMPILE_THREADS, (sites for _, sites, _ in work))
    widest = heapq.nlargest(COMPILE_THREADS, (values for _, _, values in work))
    return (sum(MEMORY_PER_FUNCTION + body * MEMORY_PER_BYTE for body, _ in shape)
            + MEMORY_PER_GC_UNIT * sum(largest)
            + int(MEMORY_PER_SITE_SQUARED * sum(sites * sites for sites in busiest))
            + MEMORY_PER_VALUE * sum(widest))


def compile_budget(timeout: float | None) -> float:
    """The compile budget (predicted CPU seconds) of a policy with this timeout: twice
    the timeout (the model is fitted on 2 cores, and a snippet policy of 10 s must still
    compile CPython once), at least `COMPILE_FLOOR`."""
    return COMPILE_CEILING if timeout is None else max(COMPILE_FLOOR, COMPILE_RATIO * timeout)


def memory_budget(max_memory: int) -> int:
    """The compile memory budget (bytes) of a policy whose guest may use `max_memory`."""
    return COMPILE_MEMORY + max_memory


def load_deadline(timeout: float | None) -> float:
    """Seconds a load (compile included) may take in an isolated worker of a policy with
    this timeout (`compile_deadline` of its compile budget)."""
    return compile_deadline(compile_budget(timeout))


def compile_deadline(budget: float) -> float:
    """Seconds of wall-clock time checking and compiling a module may take under a
    compile budget of `budget` CPU seconds (each phase gets it), plus slack for reading
    and a noisy machine."""
    return budget * 2 + _LOAD_SLACK

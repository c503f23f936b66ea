"""Translate what wasmtime reports into Stockade outcomes, in one place, for both engines.

The wasmtime-py sandbox hands over exceptions (`classify`); the C-API fast path hands
over a trap code and message, or an error message and WASI exit status
(`ending_of_trap`, `ending_of_error`). Both then apply `memory_verdict`. Nothing here
imports wasmtime at module load: the trap codes are `wasmtime_trap_code_t` (wasmtime's
`trap.h`), which wasmtime-py's `TrapCode` mirrors.
"""

from __future__ import annotations

import re
import sys

from ..errors import ModuleError
from ..policy.units import format_size
from ..records import FrozenRecord, record
from ..result import GuestExited, GuestStopped, Outcome

__all__ = ["Ending", "TIMED_OUT", "EXITED_OK", "TRAP_STACK_OVERFLOW", "TRAP_INTERRUPT",
           "TRAP_OUT_OF_FUEL", "root_cause", "exited", "ending_of_trap", "ending_of_error",
           "memory_verdict", "fuel_consumed", "classify", "start_with_values",
           "describe_load_error", "describe_load_message"]

PAGE = 65536


@record(frozen=True, init=False, repr=False, eq=False, slots=True)
class Ending(FrozenRecord):
    """How a guest's run ended: outcome, message, and the guest's exit code if it exited."""

    outcome: Outcome
    message: str
    guest_exit_code: int | None = None

    def __init__(self, outcome: Outcome, message: str,
                 guest_exit_code: int | None = None) -> None:
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "guest_exit_code", guest_exit_code)


EXITED_OK = Ending(Outcome.EXITED, "exited with code 0", 0)


def exited(code: int) -> Ending:
    """The guest's own exit with `code` (WASI's u32: every backend serves `proc_exit`
    itself, as wasmtime's fails codes past 125), `EXITED_OK` for 0."""
    return EXITED_OK if code == 0 else Ending(Outcome.EXITED, f"exited with code {code}", code)


# wasmtime_trap_code_t values (wasmtime/trap.h; wasmtime.TrapCode has the same numbers).
TRAP_STACK_OVERFLOW = 0
TRAP_INTERRUPT = 10
TRAP_OUT_OF_FUEL = 11
_FUEL = Ending(Outcome.FUEL_EXHAUSTED, "instruction budget (fuel) exhausted")
TIMED_OUT = Ending(Outcome.TIMEOUT, "wall-clock timeout")
# wasmtime's words for a GC allocation its heap's cap refused.
_GC_HEAP_FULL = ("gc heap out of memory", "allocation size too large")
_TRAP_ENDINGS = {
    TRAP_OUT_OF_FUEL: _FUEL,
    TRAP_INTERRUPT: TIMED_OUT,
    TRAP_STACK_OVERFLOW: Ending(Outcome.TRAP, "wasm stack exhausted"),
}


def root_cause(text: str) -> str:
    """The informative line of a wasmtime message: its causes (after the last `Caused
    by:`, without their numbers, joined by `: `), not the context lines or the backtrace.
    The last: an error a host call raised comes wrapped in the guest's backtrace once
    per frame that called through a trampoline."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Caused by:" in lines[:-1]:
        last = len(lines) - 1 - lines[::-1].index("Caused by:")
        causes = []
        for cause in lines[last + 1:]:
            head, _, rest = cause.partition(": ")
            if not (head.isdigit() and rest):
                causes.append(cause)
                break  # one unnumbered cause is the whole of it
            causes.append(rest)
        return ": ".join(causes).removeprefix("wasm trap: ")
    for line in lines:
        if line.startswith("wasm trap:"):
            return line.removeprefix("wasm trap: ")
    return lines[0] if lines else "unknown error"


def ending_of_trap(code: int | None, message: str) -> Ending:
    """A trap, by its code (fuel, epoch interrupt, stack) or else its message: `trap`."""
    known = _TRAP_ENDINGS.get(code) if code is not None else None
    if known is not None:
        return known
    cause = root_cause(message)
    return _gc_heap_full(cause) or Ending(Outcome.TRAP, cause)


def _gc_heap_full(cause: str, limit: int | None = None) -> Ending | None:
    """`memory_limit` when wasmtime's cause (`root_cause`, never the whole message: its
    backtrace shows names the guest chose) says the GC heap's cap refused an allocation;
    `limit` is that cap in bytes, when known."""
    if not any(words in cause.lower() for words in _GC_HEAP_FULL):
        return None
    reached = "GC heap limit reached" if limit is None \
        else f"GC heap limit of {format_size(limit)} reached"
    return Ending(Outcome.MEMORY_LIMIT, f"{reached}: {cause}")


def ending_of_error(message: str, exit_status: int | None, *, started: bool,
                    max_memory: int) -> Ending:
    """An error (not a trap) from instantiating (`started=False`) or calling `_start`.

    A WASI exit status is a normal exit. Before the guest started, a memory its module
    declares beyond `max_memory` (bytes) is `memory_limit`; a mapping the host could not
    make (ENOMEM) an `error`; any other refusal (tables, instances, too many memories) is
    a `trap`. After, fuel and interrupt messages keep their outcomes.
    Judged on wasmtime's causes only (`root_cause`): the message's backtrace shows names
    the guest chose, and a function named `interrupt` made any failed host call a
    `timeout`, which breakers count.
    """
    if exit_status is not None:
        return exited(exit_status)
    cause = root_cause(message)
    gc_heap = _gc_heap_full(cause, max_memory)
    if gc_heap is not None:
        return gc_heap
    text = cause.lower()
    if not started:
        if "os error 12" in text:  # ENOMEM: the host's mapping failed, not the guest
            return Ending(Outcome.ERROR, f"the host could not map the guest's memory ({cause});"
                          " is this process's address space limited (ulimit -v)?")
        if "memory" in text and ("limit" in text or "minimum" in text) \
                and "count too high" not in text:  # too many memories: not their size
            return Ending(Outcome.MEMORY_LIMIT, "declared memory exceeds the memory limit "
                          f"of {format_size(max_memory)}")
        if "shared memory" in text:  # a module of the threads proposal, never run here
            return Ending(Outcome.DENIED, "the module has a shared memory (threads), which "
                          "Stockade does not provide")
        return Ending(Outcome.TRAP, f"instantiation refused: {cause}")
    if "all fuel consumed" in text:
        return _FUEL
    if "interrupt" in text:
        return TIMED_OUT
    return Ending(Outcome.TRAP, cause)


def memory_verdict(ending: Ending, peak: int, limit: int, refused: int = 0) -> Ending:
    """A guest that failed after the memory limit refused it memory was stopped by the
    limit: a denied `memory.grow` returns -1 rather than trapping, and the guest then
    traps or exits non-zero on the failed allocation. `peak` and `limit` in bytes.
    Refused: `refused` (bytes), the largest size a refused grow asked for
    (`engine.growwatch`), is past the limit; or its memory was near the limit, which
    also serves a module whose grows are not watched: within a 16th of the limit or
    1 MiB, whichever is larger, but never more than a quarter (under a 1 MiB limit every
    failure was judged the limit's). A refused grow alone is no violation: a guest that
    copes with it and exits 0 has exited."""
    failed = ending.outcome is Outcome.TRAP or (
        ending.outcome is Outcome.EXITED and ending.guest_exit_code not in (0, None))
    if not failed:
        return ending
    if refused > limit:
        return Ending(Outcome.MEMORY_LIMIT, f"memory limit of {format_size(limit)} reached: "
                      f"a memory.grow to {format_size(refused)} was refused")
    reachable = limit - limit % PAGE  # memory grows by whole pages
    if peak + min(max(limit // 16, 16 * PAGE), limit // 4) >= reachable:
        return Ending(Outcome.MEMORY_LIMIT, f"memory limit of {format_size(limit)} reached "
                      f"(linear memory {format_size(peak)})")
    return ending


def fuel_consumed(budget: int | None, left: int, ending: Ending,
                  in_host_call: bool) -> int | None:
    """The fuel a run consumed, from its `budget` (None: not metered) and what the
    store says is `left`; None when that count is not known. wasmtime keeps a function's
    count in a register and writes it to the store only at calls, returns, `unreachable`
    and its out-of-fuel check: a guest stopped in its own code elsewhere (the deadline,
    a cancellation, a fault such as a bad address or a zero divisor) unwinds with the
    rest of its count unwritten (a loop without calls read 0). `ending` is the engine's,
    before any verdict on memory; `in_host_call`: a host call stopped the guest."""
    if budget is None or not (in_host_call or _count_written(ending)):
        return None
    return budget - left


def _count_written(ending: Ending) -> bool:
    """Whether the store holds the whole count of a guest `ending` stopped in its own code."""
    if ending.outcome is Outcome.TRAP:
        return ending.message in _WRITTEN_BY_TRAP
    return ending.outcome in (Outcome.EXITED, Outcome.FUEL_EXHAUSTED)


# `unreachable` writes the count first; a stack overflow traps on entry to a function,
# after its caller's call wrote it.
_WRITTEN_BY_TRAP = ("wasm `unreachable` instruction executed",
                    _TRAP_ENDINGS[TRAP_STACK_OVERFLOW].message)


def classify(error: BaseException, *, started: bool = True, max_memory: int = 0) -> Ending:
    """The `Ending` of an exception raised by wasmtime-py while instantiating
    (`started=False`) or running a guest. `ExitTrap` is a normal exit; `GuestStopped`
    comes from Stockade's own host calls; traps and errors as `ending_of_trap` and
    `ending_of_error`; anything else is `error`. A KeyboardInterrupt (Ctrl-C in a host
    call, which stopped the guest for it) is no outcome: it is raised again (a fresh
    one: the caught one's traceback holds the run's frames)."""
    if isinstance(error, KeyboardInterrupt):
        raise KeyboardInterrupt from None
    if isinstance(error, GuestStopped):  # before the import: the C-API backend's only case
        return Ending(error.outcome, error.message)
    if isinstance(error, GuestExited):  # the guest's `proc_exit`
        return exited(error.code)
    # Without wasmtime-py loaded, `error` is none of its exceptions: not imported for it
    # (a confined C-API worker cannot import it, and its failure then hid the error).
    wasmtime = sys.modules.get("wasmtime")
    if wasmtime is None:
        return Ending(Outcome.ERROR, f"{type(error).__name__}: {error}")

    if isinstance(error, wasmtime.ExitTrap):
        return exited(error.code)
    if isinstance(error, wasmtime.Trap):
        code = error.trap_code
        return ending_of_trap(None if code is None else int(code.value), error.message)
    if isinstance(error, wasmtime.WasmtimeError):
        return ending_of_error(str(error), None, started=started, max_memory=max_memory)
    return Ending(Outcome.ERROR, f"{type(error).__name__}: {error}")


# wat2wasm's errors point at the source: "message\n --> <anon>:LINE:COL\n | ...".
# Compiled on first use (`re` keeps them): most runs end without a message to read.
_WAT_LOCATION = r"(?m)^\s*-->\s*\S*?:(\d+):(\d+)\s*$"
_WAT_SOURCE = r"(?m)^\s*\d+\s*\|\s?(.*)$"
_CAUSE_NUMBER = r"^\d+: "


def describe_load_error(error: BaseException) -> str:
    """`describe_load_message` of a wasmtime-py error."""
    return describe_load_message(str(error))


def start_with_values(name: str) -> ModuleError:
    """The refusal of module `name`, whose `_start` takes or returns values: refused
    when loaded (126), not failed as a trap when called."""
    return ModuleError(f"{name}: its `_start` takes or returns values: a WASI command's "
                       "`_start` has neither")


def invalid_module(name: str, error: BaseException | str, needs_gc: bool = False) -> ModuleError:
    """The refusal of module `name`, which wasmtime did not accept (`error`: its error or
    message); `needs_gc`: an engine with the GC and exception-handling proposals accepts
    it (`validity`), so the refusal says how to allow them."""
    hint = _GC_HINT if needs_gc else ""
    return ModuleError(f"{name}: invalid WebAssembly: {describe_load_message(str(error))}{hint}")


_GC_HINT = ("; it uses Wasm GC or exception handling, off by default: allow them with "
            "--wasm-gc (policy: wasm_gc = true), which gives its GC heap and its linear "
            "memory half of --max-memory each")


def describe_load_message(text: str) -> str:
    """A one-line reason a module could not be compiled, validated, linked or
    deserialized: the context and its causes joined by `; `; for WAT,
    `line L, column C: message (near `source line`)`."""
    where = re.search(_WAT_LOCATION, text)
    if where is not None:
        message = text[:where.start()].strip().splitlines()
        source = re.compile(_WAT_SOURCE).search(text, where.end())
        near = f" (near `{source.group(1).strip()[:60]}`)" if source and source.group(1).strip() \
            else ""
        reason = message[-1].strip() if message else "syntax error"
        return f"line {where.group(1)}, column {where.group(2)}: {reason}{near}"
    lines = [re.sub(_CAUSE_NUMBER, "", line.strip()) for line in text.strip().splitlines()]
    # wasmtime puts the context first and the root cause last ("Caused by: ...").
    noise = ("caused by", "stack backtrace")
    useful = [line for line in lines if line and not line.lower().startswith(noise)]
    return "; ".join(dict.fromkeys(useful[:3])) or "unknown error"

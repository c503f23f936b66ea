"""Translate what wasmtime raises into Stockade outcomes, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

import wasmtime

from ..result import GuestStopped, Outcome

__all__ = ["Ending", "classify", "describe_load_error"]


@dataclass(frozen=True)
class Ending:
    """How a guest's run ended: outcome, message, and the guest's exit code if it exited."""

    outcome: Outcome
    message: str
    guest_exit_code: int | None = None


_TRAP_OUTCOMES = {
    wasmtime.TrapCode.OUT_OF_FUEL: (Outcome.FUEL_EXHAUSTED, "instruction budget (fuel) exhausted"),
    wasmtime.TrapCode.INTERRUPT: (Outcome.TIMEOUT, "wall-clock timeout"),
    wasmtime.TrapCode.STACK_OVERFLOW: (Outcome.TRAP, "wasm stack exhausted"),
}


def _first_line(text: str) -> str:
    """The informative line of a wasmtime error: its root cause, not the backtrace."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1]
        return cause.split(": ", 1)[1] if cause[:1].isdigit() and ": " in cause else \
            cause.removeprefix("wasm trap: ")
    for line in lines:
        if line.startswith("wasm trap:"):
            return line.removeprefix("wasm trap: ")
    return lines[0] if lines else "unknown error"


def classify(error: BaseException) -> Ending:
    """Map an exception raised by a guest's entry point to an `Ending`.

    `ExitTrap` is a normal exit; `GuestStopped` comes from Stockade's own host calls;
    traps map by trap code (fuel, epoch interrupt, stack) and otherwise are `trap`.
    """
    if isinstance(error, wasmtime.ExitTrap):
        return Ending(Outcome.EXITED, f"exited with code {error.code}", error.code)
    if isinstance(error, GuestStopped):
        return Ending(error.outcome, error.message)
    if isinstance(error, wasmtime.Trap):
        code = error.trap_code
        if code in _TRAP_OUTCOMES:
            outcome, message = _TRAP_OUTCOMES[code]
            return Ending(outcome, message)
        return Ending(Outcome.TRAP, _first_line(error.message))
    if isinstance(error, wasmtime.WasmtimeError):
        text = str(error)
        if "all fuel consumed" in text:
            return Ending(Outcome.FUEL_EXHAUSTED, "instruction budget (fuel) exhausted")
        if "interrupt" in text:
            return Ending(Outcome.TIMEOUT, "wall-clock timeout")
        return Ending(Outcome.TRAP, _first_line(text))
    return Ending(Outcome.ERROR, f"{type(error).__name__}: {error}")


# wat2wasm's errors point at the source: "message\n --> <anon>:LINE:COL\n | ...".
_WAT_LOCATION = re.compile(r"^\s*-->\s*\S*?:(\d+):(\d+)\s*$", re.MULTILINE)
_WAT_SOURCE = re.compile(r"^\s*\d+\s*\|\s?(.*)$", re.MULTILINE)


def describe_load_error(error: wasmtime.WasmtimeError) -> str:
    """A one-line reason a module could not be compiled, validated or deserialized; for
    WAT, `line L, column C: message (near `source line`)`."""
    text = str(error)
    where = _WAT_LOCATION.search(text)
    if where is not None:
        message = text[:where.start()].strip().splitlines()
        source = _WAT_SOURCE.search(text, where.end())
        near = f" (near `{source.group(1).strip()[:60]}`)" if source and source.group(1).strip() \
            else ""
        reason = message[-1].strip() if message else "syntax error"
        return f"line {where.group(1)}, column {where.group(2)}: {reason}{near}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # wasmtime puts the context first and the root cause last ("Caused by: ...").
    noise = ("caused by", "stack backtrace")
    useful = [line for line in lines if not line.lower().startswith(noise)]
    return "; ".join(dict.fromkeys(useful[:3])) or "unknown error"

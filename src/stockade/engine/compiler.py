"""Compiling in a child process: Cranelift's CPU and memory bounded, not predicted.

The compile guard (`engine.guard`) refuses what its model (`codework`, `compilecost`)
prices over budget, but a model is not a bound: each review found code that compiled
for tens of seconds it priced at a fraction of one, and 1,000 parameters live across
40,000 minimal `if`s (210 KB) made Cranelift ask for 3.3 GB, which it cannot survive
being refused: the process aborts. In the host's own process that was the host. So the
code is compiled by a child (`engine.compilechild`) under `RLIMIT_CPU`
(the guard's compile budget) and `RLIMIT_AS` (its memory budget, `address_space`),
which writes the serialized code back; the caller deserializes it (wasmtime checks that
it was made for the same engine settings). A child over its CPU or memory is refused
with the limit it met (`ModuleError`); one that outlives `load_deadline` is killed.

A process that is itself a bounded, disposable worker (an isolated worker, a gateway
pool worker: `RLIMIT_CPU` and `RLIMIT_AS` of their own, and seccomp that forbids new
processes) compiles in place (`compile_in_this_process`). Starting the child costs
~60-100 ms, paid only on an AoT cache miss.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from ..compilecost import load_deadline
from ..errors import ModuleError, StockadeError
from ..policy.units import format_size
from . import compilechild
from .compilechild import INVALID, OUT_OF_MEMORY

__all__ = ["compiles_in_child", "compile_in_this_process", "compile_in_child",
           "address_space"]

Settings = Sequence[tuple[str, bool | int | str]]

_CHILD = compilechild.__file__  # run by path (-P): it imports nothing of Stockade
_in_child = True


def compiles_in_child() -> bool:
    """Whether this process compiles modules in a child (see the module docstring)."""
    return _in_child


def compile_in_this_process() -> None:
    """From now on, compile here: this process is a bounded worker that may not start
    one (call before its seccomp filter)."""
    global _in_child
    _in_child = False


def address_space(memory_budget: int) -> int:
    """Bytes of address space a compile may add to its child: twice the guard's memory
    budget. Cranelift maps more than it touches (CPython for WASI: 298 MB resident,
    426 MB mapped), and the budget is of predicted memory, which CPython's 173 MB is."""
    return 2 * memory_budget


def compile_in_child(settings: Settings, wasm: bytes, name: str, cpu_budget: float | None,
                     memory_budget: int | None) -> bytes:
    """The serialized code of `wasm`, compiled by a child with these engine settings
    (`EngineConfig.settings`), `cpu_budget` seconds of CPU and `memory_budget` bytes of
    predicted memory (`address_space`); None: unbounded. Raises ModuleError when wasmtime
    refuses the module or the compile meets a limit, StockadeError when no child starts."""
    spec = {"settings": [list(pair) for pair in settings], "cpu": cpu_budget,
            "parent": os.getpid(),
            "address_space": None if memory_budget is None else address_space(memory_budget)}
    # Each malloc arena reserves 64 MiB of address space, which RLIMIT_AS counts.
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    deadline = load_deadline(cpu_budget) if cpu_budget is not None else None
    try:
        done = subprocess.run([sys.executable, "-P", _CHILD],
                              input=json.dumps(spec).encode() + b"\n" + wasm,
                              capture_output=True, env=env, timeout=deadline, check=False)
    except subprocess.TimeoutExpired:
        raise ModuleError(f"{name}: compiling took longer than {deadline:.0f} s; "
                          "refused") from None
    except OSError as exc:
        raise StockadeError(f"cannot start the compiler ({sys.executable}): "
                            f"{exc.strerror}") from None
    if done.returncode == 0:
        return done.stdout
    raise _refusal(done.returncode, done.stderr.decode(errors="replace"), name, cpu_budget,
                   memory_budget)


def _refusal(status: int, stderr: str, name: str, cpu_budget: float | None,
             memory_budget: int | None) -> ModuleError:
    """Why the child compiled nothing, in one line."""
    if status == INVALID:
        from .traps import describe_load_message

        return ModuleError(f"{name}: invalid WebAssembly: {describe_load_message(stderr)}")
    if status in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_budget is not None:
        return ModuleError(f"{name}: compiling it took more than the policy's compile "
                           f"budget of {cpu_budget:.0f} s of CPU; refused")
    # Rust aborts on an allocation refused ("memory allocation of N bytes failed").
    if status == OUT_OF_MEMORY or (status == -signal.SIGABRT and "memory allocation" in stderr):
        if memory_budget is None:
            return ModuleError(f"{name}: compiling it ran out of memory; refused")
        return ModuleError(f"{name}: compiling it needed more than "
                           f"{format_size(address_space(memory_budget))} of memory (the "
                           "policy's compile budget); refused")
    last = stderr.strip().splitlines()[-1:] or ["no message"]
    how = f"signal {-status}" if status < 0 else f"status {status}"
    return ModuleError(f"{name}: the compiler failed ({how}): {last[0][:200]}")

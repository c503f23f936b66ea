"""Compiling in a child process: what a module costs to check and compile is bounded,
not predicted.

The compile guard (`engine.guard`) refuses what its model (`codework`, `compilecost`)
prices over budget, but a model is not a bound: each review found code that compiled
for tens of seconds it priced at a fraction of one, and 1,000 parameters live across
40,000 minimal `if`s (210 KB) made Cranelift ask for 3.3 GB, which it cannot survive
being refused: the process aborts. In the host's own process that was the host. What
reads the module before it compiles costs too: wasmtime's validator checks each
`br_table` target against its label's types (1 MB of targets of 1,000 values: 7 s).

So everything done to a module's bytes after they are hashed (`checked_code`: validate,
the guard's scan, the tripwire's rewriting; then the compile) runs in a child
(`engine.compilechild`) under `RLIMIT_CPU` (the guard's CPU budget for the checks, and
again for the compile) and `RLIMIT_AS` (`address_space`, from its memory budget). The
child writes the serialized code back and the caller deserializes it (wasmtime checks
that it was made for the same engine settings). What meets a limit is refused with it
(`ModuleError`), and remembered: the same bytes under the same budgets are refused again
without a child. One that outlives `compile_deadline` is killed; the child dies with its
caller.

A process that is itself a bounded, disposable worker (an isolated worker, a gateway
pool worker: `RLIMIT_CPU` and `RLIMIT_AS` of their own, and seccomp that forbids new
processes) checks and compiles in place (`compile_in_this_process`). Starting the child
costs ~0.1 s, on an AoT cache miss only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..allocator import arena_limit
from ..compilecost import compile_deadline
from ..errors import ModuleError, StockadeError
from ..paths import import_path, module_command
from ..policy.units import format_size

# Imported with this module, not when a module is refused: an isolated worker compiles
# after its confinement hides the installation (a fresh checkout under /tmp: every
# isolated compile failed, 125).
from .grow import EXPORT as GROW_EXPORT
from .growwatch import exports_reserved, watch
from .validity import needs_gc

if TYPE_CHECKING:
    import wasmtime

    from .guard import CompileGuard

__all__ = ["compiles_in_child", "compile_in_this_process", "compile_in_child",
           "checked_code", "compile_checked", "address_space", "run_child", "child_refusal",
           "REFUSED", "UNSUPPORTED", "OUT_OF_MEMORY", "PARENT_GONE"]

Settings = Sequence[tuple[str, bool | int | str]]

# The child's exit status: a refusal whose one line is on stderr (`ModuleError`: invalid,
# over the guard's budget; `tripwire.Unsupported`), Python refused memory, no caller.
REFUSED, UNSUPPORTED, OUT_OF_MEMORY, PARENT_GONE = 3, 4, 5, 6
_REMEMBERED = 256  # refusals kept (bytes' digest, settings, guard, tripwire)
_refused: dict[tuple[str, str, str, bool], ModuleError] = {}
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


def checked_code(wasm: bytes, name: str, guard: CompileGuard | None, tripwire: bool,
                 validate: Callable[[bytes], object]) -> bytes:
    """The bytes to compile for module `wasm`: validated (`validate` raises ModuleError),
    checked by `guard`, its `memory.grow`s watched (`engine.growwatch`), rewritten with
    its tripwire (`engine.tripwire`). Raises ModuleError or tripwire.Unsupported."""
    work = None
    # Valid first: the guard's scan and the rewritings read only what wasmtime accepts
    # (a module of 8M types cost the scan 20 s before wasmtime's refusal).
    validate(wasm)
    if exports_reserved(wasm):
        raise ModuleError(f"{name}: exports {GROW_EXPORT!r}, a name Stockade reserves for "
                          "the memory limit's verdict")
    if guard is not None:
        work = guard.check_code(wasm, name)
    watched = watch(wasm)
    if watched is not wasm:
        try:
            validate(watched)
            wasm = watched
        except ModuleError:  # never expected: the module then runs unwatched
            pass
    if tripwire:
        from .tripwire import rewrite

        wasm = rewrite(wasm, validate, ModuleError, guard, name, work)
    return wasm


def compile_checked(engine: wasmtime.Engine, wasm: bytes, name: str,
                    guard: CompileGuard | None, tripwire: bool,
                    before_compile: Callable[[], object] = lambda: None) -> wasmtime.Module:
    """`checked_code` of `wasm`, compiled by wasmtime-py's `engine` (`before_compile`
    runs between the two). Raises ModuleError or tripwire.Unsupported."""
    import wasmtime

    from .traps import invalid_module

    def validate(code: bytes) -> None:
        try:
            wasmtime.Module.validate(engine, code)
        except wasmtime.WasmtimeError as exc:
            raise invalid_module(name, exc, needs_gc(code)) from None

    code = checked_code(wasm, name, guard, tripwire, validate)
    before_compile()
    try:
        return wasmtime.Module(engine, code)
    except wasmtime.WasmtimeError as exc:
        raise invalid_module(name, exc) from None


def compile_in_child(settings: Settings, wasm: bytes, name: str, guard: CompileGuard | None,
                     tripwire: bool) -> bytes:
    """The serialized code of `wasm` (`checked_code`, then compiled) made by a child with
    these engine settings (`EngineConfig.settings`) within `guard`'s budgets (None:
    unbounded). Raises ModuleError when the module is refused or meets a limit,
    tripwire.Unsupported, StockadeError when no child starts."""
    bounds = None if guard is None else dataclasses.asdict(guard)
    key = (hashlib.sha256(wasm).hexdigest(), repr(settings), json.dumps(bounds), tripwire)
    if key in _refused:
        raise _refused[key]
    spec = {"settings": [list(pair) for pair in settings], "tripwire": tripwire}
    done = run_child(spec, wasm, name, guard)
    if done.returncode == 0:
        return done.stdout
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode == UNSUPPORTED:
        from .tripwire import Unsupported

        raise Unsupported(stderr)
    refusal = child_refusal(done.returncode, stderr, name, guard)
    if len(_refused) >= _REMEMBERED:
        _refused.pop(next(iter(_refused)))
    _refused[key] = refusal
    raise refusal


def run_child(spec: dict[str, object], wasm: bytes, name: str, guard: CompileGuard | None,
              doing: str = "compiling") -> subprocess.CompletedProcess[bytes]:
    """`engine.compilechild` given `spec` (its task), `wasm` and `guard`'s budgets: CPU
    (`RLIMIT_CPU`), address space (`address_space` of the memory budget), killed past
    `compile_deadline`. Raises ModuleError past that deadline (`doing` says what took
    long), StockadeError when no child starts."""
    bounds = None if guard is None else dataclasses.asdict(guard)
    spec = {**spec, "name": name, "guard": bounds, "parent": os.getpid(),
            "address_space": None if guard is None or guard.memory_budget is None
            else address_space(guard.memory_budget)}
    cpu = None if guard is None else guard.compile_budget
    deadline = None if cpu is None else compile_deadline(cpu)
    try:
        return subprocess.run(module_command("stockade.engine.compilechild"),
                              input=json.dumps(spec).encode() + b"\n" + wasm,
                              capture_output=True, env=_environment(), cwd="/",
                              timeout=deadline, check=False)
    except subprocess.TimeoutExpired:
        raise ModuleError(f"{name}: {doing} took longer than {deadline:.0f} s; "
                          "refused") from None
    except OSError as exc:
        raise StockadeError(f"cannot start the compiler ({sys.executable}): "
                            f"{exc.strerror}") from None


def _environment() -> dict[str, str]:
    """The child's: this process's, importing Stockade from where this process did, with
    few malloc arenas (its RLIMIT_AS counts their reservations)."""
    return {**os.environ, "PYTHONPATH": import_path(), **arena_limit()}


def child_refusal(status: int, stderr: str, name: str, guard: CompileGuard | None,
                  doing: str = "compiling",
                  bound: str = "the policy's compile budget") -> ModuleError:
    """Why the child (`run_child`, `doing` its task) gave nothing back, in one line
    naming the `bound` it met."""
    if status == REFUSED:
        return ModuleError(stderr.splitlines()[-1] if stderr else f"{name}: refused")
    if status == -signal.SIGXCPU and guard is not None and guard.compile_budget is not None:
        return ModuleError(f"{name}: {doing} it took more than {bound} of "
                           f"{guard.compile_budget:.0f} s of CPU; refused")
    # Rust aborts on an allocation refused ("memory allocation of N bytes failed").
    if status == OUT_OF_MEMORY or (status == -signal.SIGABRT and "memory allocation" in stderr):
        if guard is None or guard.memory_budget is None:
            return ModuleError(f"{name}: {doing} it ran out of memory; refused")
        return ModuleError(f"{name}: {doing} it needed more than "
                           f"{format_size(address_space(guard.memory_budget))} of memory "
                           f"({bound}); refused")
    if status == -signal.SIGKILL:
        return ModuleError(f"{name}: the process {doing} it was killed (SIGKILL: out of "
                           "memory on this machine or in its cgroup?); refused")
    last = stderr.splitlines()[-1:] or ["no message"]
    how = f"signal {-status}" if status < 0 else f"status {status}"
    return ModuleError(f"{name}: the process {doing} it failed ({how}): {last[0][:200]}")

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
without a child. One that outlives `compile_deadline`, or stays stopped (SIGSTOP: it
spends no CPU, so only that deadline, minutes later, ended it), is killed and refused;
the child dies with its caller. A refusal for memory names the address space the child
had: its budget's, or a lower `RLIMIT_AS` it inherited.

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
from typing import TYPE_CHECKING, NamedTuple

from ..allocator import arena_limit
from ..compilecost import compile_deadline
from ..errors import ModuleError, StockadeError
from ..paths import import_path, module_command
from ..policy.units import format_size

# Imported with this module, not when a module is refused: an isolated worker compiles
# after its confinement hides the installation (a fresh checkout under /tmp: every
# isolated compile failed, 125).
from .childpipe import ChildStopped, DeadlinePassed, exchange
from .grow import EXPORT as GROW_EXPORT
from .growwatch import exports_reserved, watch
from .validity import needs_gc

if TYPE_CHECKING:
    import wasmtime

    from .guard import CompileGuard

__all__ = ["compiles_in_child", "compile_in_this_process", "compile_in_child",
           "checked_code", "compile_checked", "address_space", "run_child", "child_refusal",
           "ChildResult",
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
    if done.returncode == UNSUPPORTED:
        from .tripwire import Unsupported

        raise Unsupported(done.stderr.decode(errors="replace").strip())
    refusal = child_refusal(done, name, guard)
    if len(_refused) >= _REMEMBERED:
        _refused.pop(next(iter(_refused)))
    _refused[key] = refusal
    raise refusal


class ChildResult(NamedTuple):
    """What the compiler child gave back: its exit status (negative: the signal that
    ended it), stdout, stderr, and the bytes of address space it could map beyond what
    it mapped when it set its limit (`compilechild.limit_space`: its budget's, or a
    lower limit it inherited; None when unbounded or not reported)."""

    returncode: int
    stdout: bytes
    stderr: bytes
    space: int | None


def run_child(spec: dict[str, object], wasm: bytes, name: str, guard: CompileGuard | None,
              doing: str = "compiling") -> ChildResult:
    """`engine.compilechild` given `spec` (its task), `wasm` and `guard`'s budgets: CPU
    (`RLIMIT_CPU`), address space (`address_space` of the memory budget), killed past
    `compile_deadline` or when it stays stopped (`childpipe.STOPPED_FOR`). Raises
    ModuleError for either (`doing` says what it was doing), StockadeError when no child
    starts."""
    bounds = None if guard is None else dataclasses.asdict(guard)
    cpu = None if guard is None else guard.compile_budget
    deadline = None if cpu is None else compile_deadline(cpu)
    report, reported = os.pipe()  # the child's address space in force, as JSON
    try:
        header = json.dumps({
            **spec, "name": name, "guard": bounds, "parent": os.getpid(), "report": reported,
            "address_space": None if guard is None or guard.memory_budget is None
            else address_space(guard.memory_budget)}).encode() + b"\n"
        try:
            process = subprocess.Popen(
                module_command("stockade.engine.compilechild"), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_environment(),
                cwd="/", pass_fds=(reported,))
        except OSError as exc:
            raise StockadeError(f"cannot start the compiler ({sys.executable}): "
                                f"{exc.strerror}") from None
        finally:
            os.close(reported)
        with process:
            try:
                # Written from the caller's buffer: the module is never held twice.
                out, err, (space,) = exchange(
                    process, (header, wasm), deadline, (report,))
            except DeadlinePassed:
                raise ModuleError(f"{name}: {doing} took longer than {deadline:.0f} s; "
                                  "refused") from None
            except ChildStopped as exc:
                raise ModuleError(f"{name}: the process {doing} it was stopped "
                                  f"({exc.signal_name}) and killed; refused") from None
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        os.close(report)
    return ChildResult(process.returncode, out, err, _space(space))


def _space(report: bytes) -> int | None:
    """The address space the child reported (`compilechild.report_space`), or None."""
    try:
        space = json.loads(report)["space"]
    except (ValueError, KeyError, TypeError):
        return None
    return space if isinstance(space, int) and not isinstance(space, bool) else None


def _environment() -> dict[str, str]:
    """The child's: this process's, importing Stockade from where this process did, with
    few malloc arenas (its RLIMIT_AS counts their reservations)."""
    return {**os.environ, "PYTHONPATH": import_path(), **arena_limit()}


def child_refusal(done: ChildResult, name: str, guard: CompileGuard | None,
                  doing: str = "compiling",
                  bound: str = "the policy's compile budget") -> ModuleError:
    """Why the child (`run_child`, `doing` its task) gave nothing back, in one line
    naming the bound it met: `bound` (what set its budgets), or the lower address-space
    limit it inherited."""
    status, stderr = done.returncode, done.stderr.decode(errors="replace").strip()
    if status == REFUSED:
        return ModuleError(stderr.splitlines()[-1] if stderr else f"{name}: refused")
    if status == -signal.SIGXCPU and guard is not None and guard.compile_budget is not None:
        return ModuleError(f"{name}: {doing} it took more than {bound} of "
                           f"{guard.compile_budget:.0f} s of CPU; refused")
    # Rust aborts on an allocation refused ("memory allocation of N bytes failed").
    if status == OUT_OF_MEMORY or (status == -signal.SIGABRT and "memory allocation" in stderr):
        budget = None if guard is None or guard.memory_budget is None \
            else address_space(guard.memory_budget)
        if done.space is not None and (budget is None or done.space < budget):
            return ModuleError(f"{name}: {doing} it needed more than "
                               f"{format_size(done.space)} of memory (the address-space "
                               "limit this process was started with); refused")
        if budget is None:
            return ModuleError(f"{name}: {doing} it ran out of memory; refused")
        return ModuleError(f"{name}: {doing} it needed more than {format_size(budget)} "
                           f"of memory ({bound}); refused")
    if status == -signal.SIGKILL:
        return ModuleError(f"{name}: the process {doing} it was killed (SIGKILL: out of "
                           "memory on this machine or in its cgroup?); refused")
    last = stderr.splitlines()[-1:] or ["no message"]
    how = f"signal {-status}" if status < 0 else f"status {status}"
    return ModuleError(f"{name}: the process {doing} it failed ({how}): {last[0][:200]}")

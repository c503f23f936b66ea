"""The compiler child (`engine.compiler`): a JSON line (wasmtime settings, the guard's
budgets, the tripwire), then the module, on stdin; the serialized code on stdout. Exit
statuses are `compiler`'s; Cranelift refused memory aborts (SIGABRT, "memory allocation
of N bytes failed"), and past its CPU the child gets SIGXCPU.

With `"task": "review"` it compiles nothing: under the same limits it asks wasmtime's
validator (`validity.engine_verdict`) and, for a module it accepts and `"price"`, prices
its code (`codework.code_work`), and writes both as one JSON object (for
`inspect.validation.review`).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
from typing import Any

from ..addrspace import vm_size

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4


def follow_parent(parent: int) -> bool:
    """Die with the parent (SIGKILL when it ends), and dump no core (a core holds the
    caller's environment): False when the parent is gone already."""
    import ctypes

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(_PR_SET_DUMPABLE, 0)
    return os.getppid() == parent


def limit_cpu(seconds: float, hard: int | None = None) -> int:
    """At most `seconds` more of CPU (SIGXCPU), not past `hard` (total seconds, SIGKILL;
    None: twice `seconds` more, for a second phase) nor the limit this process was
    started with (raising a hard limit is refused); returns the hard limit."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    if hard is None:
        hard = math.ceil(used + 2 * seconds) + 1
    _, started = resource.getrlimit(resource.RLIMIT_CPU)
    if started != resource.RLIM_INFINITY:
        hard = min(hard, started)
    resource.setrlimit(resource.RLIMIT_CPU, (min(math.ceil(used + seconds), hard - 1), hard))
    return hard


def limit_space(space: int | None) -> int | None:
    """At most `space` more bytes of address space than this process maps now (None: no
    bound of its own), within the limit it was started with (raising a hard limit is
    refused). Returns how many more it may map under the limit in force (None: no
    limit), which is less than `space` when the inherited limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = vm_size()
    if space is not None:
        soft = mapped + space if hard == resource.RLIM_INFINITY else min(mapped + space, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    return None if soft == resource.RLIM_INFINITY else max(0, soft - mapped)


def report_space(spec: dict[str, Any]) -> None:
    """Set the address-space limit (`limit_space`) and tell the caller, on the descriptor
    it passed (`compiler.run_child`), the space in force: its refusal names that."""
    space = limit_space(spec["address_space"])
    report = spec.get("report")
    if isinstance(report, int):
        try:
            os.write(report, json.dumps({"space": space}).encode())
            os.close(report)
        except OSError:  # the caller reads it only to word a refusal
            pass


def main() -> int:
    from .compiler import OUT_OF_MEMORY, PARENT_GONE, REFUSED, UNSUPPORTED

    try:
        spec = json.loads(sys.stdin.buffer.readline())
        if not follow_parent(spec["parent"]):
            return PARENT_GONE
        wasm = sys.stdin.buffer.read()
    except MemoryError:
        return OUT_OF_MEMORY
    if spec.get("task") == "review":
        return _review(wasm, spec)
    import wasmtime

    from ..errors import ModuleError
    from .compiler import compile_checked
    from .guard import CompileGuard
    from .tripwire import Unsupported

    config = wasmtime.Config()
    for setting, value in spec["settings"]:
        setattr(config, setting, value)
    engine = wasmtime.Engine(config)
    guard = None if spec["guard"] is None else CompileGuard(**spec["guard"])
    cpu = None if guard is None else guard.compile_budget
    # The checks and the compile each get the CPU budget; the memory bound is one.
    hard = None if cpu is None else limit_cpu(cpu)
    report_space(spec)
    try:
        compiled = compile_checked(
            engine, wasm, spec["name"], guard, spec["tripwire"],
            before_compile=lambda: cpu is not None and limit_cpu(cpu, hard)).serialize()
    except ModuleError as exc:
        print(exc, file=sys.stderr)
        return REFUSED
    except Unsupported as exc:
        print(exc, file=sys.stderr)
        return UNSUPPORTED
    except MemoryError:
        return OUT_OF_MEMORY
    sys.stdout.buffer.write(compiled)
    return 0


def _review(wasm: bytes, spec: dict[str, Any]) -> int:
    """wasmtime's verdict on `wasm`, and its code's price when asked, as JSON on stdout,
    within the guard's CPU budget and the address space given."""
    from ..codework import code_work
    from .compiler import OUT_OF_MEMORY
    from .validity import engine_verdict

    budget = (spec["guard"] or {}).get("compile_budget")
    if budget is not None:
        limit_cpu(budget)
    report_space(spec)
    try:
        verdict = engine_verdict(wasm)
        work = code_work(wasm) if spec["price"] and verdict.error is None else None
        answer = json.dumps({"needs_gc": verdict.needs_gc, "error": verdict.error,
                             "work": work}).encode()
    except MemoryError:
        return OUT_OF_MEMORY
    sys.stdout.buffer.write(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

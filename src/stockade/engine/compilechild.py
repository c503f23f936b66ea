"""The compiler child (`engine.compiler`): a JSON line (wasmtime settings, limits), then
the module, on stdin; the serialized code on stdout. Run by path, it imports nothing of
Stockade (only the standard library and wasmtime: ~60 ms to start, on every AoT cache
miss).

Exit status: 0, compiled; `INVALID`, wasmtime refused the module (its reason on stderr);
`OUT_OF_MEMORY`, Python itself was refused memory; `PARENT_GONE`, no one waits for the
code (the child dies with its parent). Cranelift refused memory aborts
(SIGABRT, "memory allocation of N bytes failed"); past its CPU it gets SIGXCPU.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys

INVALID = 3
OUT_OF_MEMORY = 4
PARENT_GONE = 5
_PR_SET_PDEATHSIG = 1


def limit(cpu: float | None, space: int | None) -> None:
    """From now on, `cpu` more seconds of CPU (SIGXCPU, then SIGKILL a second later) and
    `space` more bytes of address space than this process maps now; None: unbounded."""
    if cpu is not None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(used.ru_utime + used.ru_stime + cpu)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    if space is not None:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + space, mapped + space))


def follow_parent(parent: int) -> bool:
    """Die with the parent (SIGKILL when it ends): no compile outlives the process that
    wanted it. False when it is gone already."""
    import ctypes

    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent


def main() -> int:
    import wasmtime

    try:
        spec = json.loads(sys.stdin.buffer.readline())
        if not follow_parent(spec["parent"]):
            return PARENT_GONE
        wasm = sys.stdin.buffer.read()
    except MemoryError:
        return OUT_OF_MEMORY
    config = wasmtime.Config()
    for setting, value in spec["settings"]:
        setattr(config, setting, value)
    engine = wasmtime.Engine(config)
    limit(spec["cpu"], spec["address_space"])
    try:
        code = wasmtime.Module(engine, wasm).serialize()
    except wasmtime.WasmtimeError as exc:
        print(exc, file=sys.stderr)
        return INVALID
    except MemoryError:
        return OUT_OF_MEMORY
    sys.stdout.buffer.write(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())

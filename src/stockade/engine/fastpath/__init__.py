"""The per-request fast path: a fresh WASI instance per call through wasmtime's C API.

`FastEngine` is a pooling-allocator engine driven by direct ctypes calls (no
wasmtime-py wrapper objects per call); `FastModule` is a module pre-linked against
WASI preview 1 (with Stockade's own `poll_oneoff`, so sleeps end at the deadline);
`FastEngine.run` returns a `FastResult` (`plan` and `run_plan` split it in two, so a
caller that runs the same way many times checks its arguments once). Output is
captured in memfds whose cap holds while the guest runs. Pinned to wasmtime 50.x:
importing this package raises `FastPathUnavailable` with any other version; callers
fall back to the standard path.

`FastEngine.run_metered` runs under a `stockade.hostcalls.Meter` instead: preopened
directories, disk, file and descriptor quotas, the output cap, the host-call budget and
per-call caps, the deadline in blocking calls, answered by the sandbox's own owned host
calls (`stockade.hostcalls.handlers`), with the sandbox's outcomes and errnos.

Modules: `_capi` (the C functions), `_engine` (engine, admission, epoch ticker),
`_module` (loading and linking), `_run` (one run and its verdict), `_poll` (the owned
`poll_oneoff` of runs without a meter), `_metered` (the owned host calls of metered runs).

    with FastEngine(EngineConfig(), max_instances=8) as engine:
        module = engine.compile(Path("hello.wasm").read_bytes(), "hello.wasm")
        result = engine.run(module, ["world"], stdin=b"hi", timeout_s=1.0, max_output=65536)
        meter = Meter(policy.limits, time.monotonic() + 1.0, [(Path("out"), True)], b"hi")
        result = engine.run_metered(module, meter, ["world"], dirs=["/out"])
"""

from __future__ import annotations

from ...envblock import NO_ENV, EnvBlock, encode_env
from ._capi import FastPathUnavailable
from ._engine import FastEngine
from ._module import FastModule, wat2wasm
from ._native import STDIO
from ._run import FastResult, RunPlan

__all__ = ["FastEngine", "FastModule", "FastResult", "FastPathUnavailable", "RunPlan",
           "EnvBlock", "NO_ENV", "encode_env", "COUNTS_HOSTCALLS", "COUNTED_CALLS",
           "wat2wasm"]

# Whether fast-path runs count host calls (`max_hostcalls`): the native library serves
# the counted calls; without it a run with a budget is refused.
COUNTS_HOSTCALLS = STDIO is not None
# The owned calls an unmetered run serves and counts itself, as `hostcalls.handlers`
# counts them (`hostcalls.routing` sends a module importing others to a metered run).
COUNTED_CALLS: frozenset[str] = frozenset() if STDIO is None else frozenset(STDIO) | {
    "poll_oneoff"}

"""Runs one hostile guest under `Sandbox(Policy.from_profile("default"))` (or the C
API's `CapiSandbox`) with a short timeout and the GC and exception proposals allowed
(`wasm_gc`: the widest attack surface), in a child process bounded in time, so a guest
the deadline misses fails a test instead of hanging it (the tripwire attack tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.5
GRACE = 1.5  # a stopped guest ends within this of its timeout (epochs: ~0.3 s)

_CHILD = """
import json, sys, time, wasmtime
from stockade import Invocation, Policy, Sandbox
from stockade.engine import EngineConfig
from stockade.sandbox.capi import CapiSandbox
policy = Policy.from_profile("default").with_limits(timeout={timeout}, wasm_gc=True)
config = EngineConfig.for_limits(policy.limits, tripwire=False) if {epochs} else None
source = sys.stdin.read()
module = bytes.fromhex(source) if not source.lstrip().startswith("(") else \\
    bytes(wasmtime.wat2wasm(source))
fast = None
if {backend!r} == "capi":  # the C API's sandbox; what it does not serve goes to Sandbox
    capi = CapiSandbox(policy, engine_config=config)
    begun = time.monotonic()
    fast = capi.load_bytes(module, "hostile.wasm")
    compiled = time.monotonic() - begun
if fast is not None:
    begun = time.monotonic()
    result = capi.run_loaded(fast[0], fast[1], "hostile.wasm", Invocation())
    tripwire, backend = capi.engine.config.tripwire, "capi"
else:
    with Sandbox(policy, engine_config=config) as sandbox:
        begun = time.monotonic()
        loaded = sandbox.load(module)  # compiled before the clock starts
        compiled = time.monotonic() - begun
        begun = time.monotonic()
        result = sandbox.run(loaded)
        tripwire, backend = loaded.tripwire, "sandbox"
print(json.dumps(dict(outcome=result.outcome.value, message=result.message,
                      seconds=time.monotonic() - begun, compile=compiled,
                      tripwire=tripwire, backend=backend)))
"""


def run_hostile(source: str | bytes, *, epochs: bool = False, backend: str = "sandbox",
                bound: float = 90.0) -> dict[str, object]:
    """Outcome, message, seconds (of the run), compile (seconds), tripwire (whether the
    module was rewritten) and backend (the one that ran it) of one run of `source` (WAT
    text or module bytes); `epochs` runs it on an engine keeping its deadline by epochs;
    `backend` "capi" runs it on the C API's sandbox (`CapiSandbox`), which hands what it
    does not serve to `Sandbox`. Outcome `hung` when the child outlived `bound` seconds."""
    text = source.hex() if isinstance(source, bytes) else source
    script = _CHILD.format(timeout=TIMEOUT, epochs=epochs, backend=backend)
    try:
        done = subprocess.run([sys.executable, "-c", script], input=text, capture_output=True,
                              text=True, timeout=bound, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(outcome="hung", seconds=bound, compile=None, message="child killed",
                    tripwire=None, backend=backend)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def assert_stopped(run: dict[str, object]) -> None:
    """The guest was stopped as a timeout, within GRACE of its deadline."""
    assert run["outcome"] == "timeout", run
    assert float(str(run["seconds"])) < TIMEOUT + GRACE, run

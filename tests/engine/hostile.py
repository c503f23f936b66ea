"""Runs one hostile guest under `Sandbox(Policy.from_profile("default"))` with a short
timeout, in a child process bounded in time, so a guest the deadline misses fails a test
instead of hanging it (the tripwire attack tests)."""

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
from stockade import Policy, Sandbox
from stockade.engine import EngineConfig
policy = Policy.from_profile("default").with_limits(timeout={timeout})
config = EngineConfig.for_limits(policy.limits) if {epochs} else None
source = sys.stdin.read()
module = bytes.fromhex(source) if not source.lstrip().startswith("(") else \\
    bytes(wasmtime.wat2wasm(source))
with Sandbox(policy, engine_config=config) as sandbox:
    begun = time.monotonic()
    loaded = sandbox.load(module)  # compiled before the clock starts
    compiled = time.monotonic() - begun
    begun = time.monotonic()
    result = sandbox.run(loaded)
    print(json.dumps(dict(outcome=result.outcome.value, message=result.message,
                          seconds=time.monotonic() - begun, compile=compiled,
                          tripwire=loaded.tripwire)))
"""


def run_hostile(source: str | bytes, *, epochs: bool = False,
                bound: float = 90.0) -> dict[str, object]:
    """Outcome, message, seconds (of the run), compile (seconds) and tripwire (whether the
    module was rewritten) of one run of `source` (WAT text or module bytes); `epochs` runs
    it on an engine keeping its deadline by epochs. Outcome `hung` when the child outlived
    `bound` seconds."""
    text = source.hex() if isinstance(source, bytes) else source
    script = _CHILD.format(timeout=TIMEOUT, epochs=epochs)
    try:
        done = subprocess.run([sys.executable, "-c", script], input=text, capture_output=True,
                              text=True, timeout=bound, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(outcome="hung", seconds=bound, compile=None, message="child killed",
                    tripwire=None)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def assert_stopped(run: dict[str, object]) -> None:
    """The guest was stopped as a timeout, within GRACE of its deadline."""
    assert run["outcome"] == "timeout", run
    assert float(str(run["seconds"])) < TIMEOUT + GRACE, run

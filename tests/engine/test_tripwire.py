"""The tripwire deadline (`stockade.engine.tripwire`): a page the guest reads at every loop
header and function entry, revoked at the deadline.

Attacks: guests that only a deadline stops (a bare `(loop br 0)` with no memory access, a
recursion loop, a loop growing memory, a guest spinning after filling stdout, a start
function that never returns, a guest that hides from the rewriting behind a reserved
name), each run by `Sandbox` in a child process bounded in time, so a guest the tripwire
misses fails the test instead of hanging it. And the rewriting itself: every guest and
real-world module stays valid and computes the same; a module invalid as given stays
invalid (the added memory must not make valid a module naming one it lacks); truncated
input is refused with `Unsupported`, never another exception.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.engine import tripwire
from stockade.errors import ModuleError
from stockade.sandbox.cancel import CancelToken, cancellable
from tests.conftest import guest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.5
SLACK = 5.0  # containment bound: far below what an unstopped guest runs, above load noise

START_LOOP = """
(module
  (memory (export "memory") 1)
  (func $forever (loop $l (br $l)))
  (start $forever)
  (func (export "_start")))
"""
RESERVED = """
(module
  (memory (export "__stockade_tripwire") 1)
  (func (export "_start") (loop $l (br $l))))
"""
# The same bare loop, called through a table and a helper with no loop of its own.
INDIRECT = """
(module
  (memory (export "memory") 1)
  (table 1 funcref)
  (elem (i32.const 0) $tick)
  (type $t (func (param i32) (result i32)))
  (func $tick (type $t) (i32.add (local.get 0) (i32.const 1)))
  (func (export "_start") (local i32)
    (loop $l
      (local.set 0 (call_indirect (type $t) (local.get 0) (i32.const 0)))
      (br $l))))
"""

_CHILD = """
import json, sys, time
from stockade import Policy, Sandbox
policy = Policy.from_profile("default").with_limits(timeout={timeout}, max_memory="8MiB")
out = []
with Sandbox(policy) as sandbox:
    sandbox.run({hello!r})  # the engine exists before the clock starts
    for source in {sources!r}:
        module = source.encode() if source.lstrip().startswith("(module") else source
        begun = time.monotonic()
        result = sandbox.run(module)
        out.append(dict(outcome=result.outcome.value, exit_code=result.exit_code,
                        message=result.message, seconds=time.monotonic() - begun))
    out.append(dict(after=sandbox.run({hello!r}).outcome.value))
print(json.dumps(out))
"""


def _run_bounded(sources: list[str]) -> list[dict[str, object]]:
    script = _CHILD.format(timeout=TIMEOUT, hello=str(guest("hello.wasm")), sources=sources)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60 + SLACK * len(sources), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results: list[dict[str, object]] = json.loads(done.stdout.splitlines()[-1])
    return results


def test_sandbox_default_profile_keeps_its_deadline_by_tripwire() -> None:
    sandbox = Sandbox(Policy.from_profile("default"))
    assert sandbox.engine_config.tripwire and not sandbox.engine_config.epochs
    loaded = sandbox.load(guest("hello.wasm"))
    assert loaded.tripwire
    assert tripwire.EXPORT in {export.name for export in loaded.module.exports}
    # What the caller sees of the module is the module as given.
    as_given = wasmtime.Module(wasmtime.Engine(), guest("hello.wasm").read_bytes())
    assert [e.name for e in loaded.exports] == [e.name for e in as_given.exports]


def test_guests_only_a_deadline_stops_are_stopped() -> None:
    hostile = [str(guest(name)) for name in ("spin_loop.wasm", "recurse_loop.wasm",
                                               "grow_loop.wasm", "output_spin.wasm")]
    results = _run_bounded([*hostile, START_LOOP, INDIRECT, RESERVED])
    *runs, after = results
    for source, run in zip([*hostile, "start", "indirect", "reserved"], runs, strict=True):
        assert run["outcome"] == "timeout", (source, run)
        assert run["exit_code"] == 124 and run["message"] == "wall-clock timeout", run
        assert float(str(run["seconds"])) < TIMEOUT + SLACK, (source, run)
    # A tripped page is given back: the next run on the same engine is unharmed.
    assert after == {"after": "exited"}


def test_a_module_the_rewriting_refuses_runs_on_epochs() -> None:
    sandbox = Sandbox(Policy.from_profile("default").with_limits(timeout=TIMEOUT))
    loaded = sandbox.load(RESERVED.encode())
    assert not loaded.tripwire
    assert sandbox.engine.for_module(loaded).config.epochs


def test_a_module_naming_a_memory_it_lacks_stays_invalid() -> None:
    # One memory; its code loads from memory 1, which only the rewriting would add.
    body = b"\x00" + b"\x41\x00\x2d\x40\x01\x00\x1a" + b"\x0b"
    code = b"\x01" + bytes([len(body)]) + body
    module = (b"\0asm\x01\0\0\0"
              + b"\x01\x04\x01\x60\x00\x00"          # type: () -> ()
              + b"\x03\x02\x01\x00"                  # one function of type 0
              + b"\x05\x03\x01\x00\x01"              # one memory, 1 page
              + b"\x07\x0a\x01\x06_start\x00\x00"    # export _start
              + b"\x0a" + bytes([len(code)]) + code)
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module.validate(wasmtime.Engine(), module)
    assert tripwire.instrument(module)  # the rewriting alone would accept it...
    with pytest.raises(ModuleError, match="invalid WebAssembly"):
        Sandbox(Policy.from_profile("default")).load(module)  # ...the loader does not


def _modules() -> list[Path]:
    found = sorted((ROOT / "build/guests").rglob("*.wasm"))
    found += [path for path in (ROOT / "build/real").glob("*.wasm")]
    return found


def test_every_guest_and_real_module_stays_valid() -> None:
    engine = wasmtime.Engine()
    checked = 0
    for path in _modules():
        data = path.read_bytes()
        try:
            wasmtime.Module.validate(engine, data)
        except wasmtime.WasmtimeError:
            continue  # the attack suite's invalid modules
        rewritten = tripwire.instrument(data)
        wasmtime.Module.validate(engine, rewritten)
        assert tripwire.EXPORT.encode() in rewritten, path
        checked += 1
    assert checked >= 20


def test_rewritten_code_computes_the_same() -> None:
    sandbox = Sandbox(Policy.from_profile("default"))
    plain = Sandbox(Policy.from_profile("default"), engine_config=sandbox.engine_config
                    .with_epochs())
    for size in ("1000", "5000"):
        for kernel in ("fnv", "sha256", "sieve", "qsort"):
            invocation = Invocation(args=(kernel, size))
            wired = sandbox.run(guest("bench/compute.wasm"), invocation)
            reference = plain.run(guest("bench/compute.wasm"), invocation)
            assert wired.ok and reference.ok, (wired.message, reference.message)
            digest = [line for line in wired.stdout.splitlines() if b"hot_ns" not in line]
            assert digest == [line for line in reference.stdout.splitlines()
                              if b"hot_ns" not in line]


def test_truncated_and_garbage_input_is_refused_cleanly() -> None:
    data = guest("hello.wasm").read_bytes()
    for end in range(0, len(data), max(1, len(data) // 400)):
        try:
            tripwire.instrument(data[:end])
        except tripwire.Unsupported:
            pass
    for garbage in (b"", b"\0asm", b"\0asm\x01\0\0\0\x0a\xff\xff\xff\xff\x0f", b"\xff" * 64):
        with pytest.raises(tripwire.Unsupported):
            tripwire.instrument(garbage)


def test_cancelling_a_tripwire_run_stops_only_that_run() -> None:
    sandbox = Sandbox(Policy.from_profile("default").with_limits(timeout=30.0))
    token = CancelToken()
    outcomes: dict[str, Outcome] = {}

    def spin() -> None:
        with cancellable(token):
            outcomes["spin"] = sandbox.run(guest("spin_loop.wasm")).outcome

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    time.sleep(0.3)
    token.cancel()
    # Another run on the same engine meanwhile is not touched.
    outcomes["other"] = sandbox.run(guest("hello.wasm")).outcome
    thread.join(SLACK)
    assert not thread.is_alive()
    assert outcomes == {"spin": Outcome.ERROR, "other": Outcome.EXITED}


def test_async_cancellation_stops_a_spinning_guest() -> None:
    sandbox = Sandbox(Policy.from_profile("default").with_limits(timeout=30.0))

    async def main() -> bool:
        task = asyncio.create_task(sandbox.run_async(guest("spin_loop.wasm")))
        await asyncio.sleep(0.3)
        task.cancel()
        try:
            await asyncio.wait_for(task, SLACK)
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())


def test_concurrent_runs_trip_alone() -> None:
    sandbox = Sandbox(Policy.from_profile("default").with_limits(timeout=TIMEOUT))
    outcomes: list[Outcome] = []

    def run(name: str) -> None:
        outcomes.append(sandbox.run(guest(name)).outcome)

    threads = [threading.Thread(target=run, args=(name,), daemon=True)
               for name in ("spin_loop.wasm", "hello.wasm", "spin_loop.wasm", "hello.wasm")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SLACK)
    assert sorted(o.value for o in outcomes) == ["exited", "exited", "timeout", "timeout"]

"""Attack: a module the C-API worker compiles slowly and then refuses (here: no `_start`)
goes to a wasmtime-py worker for the canonical answer. That second load must get what
is left of the run's one load timeout, not a second whole one: otherwise every such
module holds a worker, a guest thread and a CPU for twice the bound the operator set."""

from __future__ import annotations

import time

import pytest
import wasmtime

from stockade import ModuleError, Outcome, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig


def _slow_without_start(functions: int = 1500, body: int = 200) -> bytes:
    """Megabytes of arithmetic to compile, and no `_start` to run (the C API refuses it
    only once it has compiled it)."""
    ops = ("local.get 0 i32.const 7 i32.mul local.get 1 i32.xor i32.add local.tee 1 "
           * body)
    funcs = "".join(f"(func $f{i} (param i32) (result i32) (local i32) local.get 0 {ops})\n"
                    for i in range(functions))
    return bytes(wasmtime.wat2wasm(f'(module {funcs} (export "f" (func $f0)))'))


def test_a_module_the_c_api_refuses_after_compiling_costs_one_load_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _slow_without_start()
    policy = Policy.from_profile("default")
    # What starting a wasmtime-py worker costs (outside any load timeout).
    monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    with IsolatedSandbox(policy) as sandbox:
        begun = time.monotonic()
        sandbox.protections()
        start_seconds = time.monotonic() - begun
    monkeypatch.delenv("STOCKADE_BACKEND")
    # Both loads with time to spare: the C API compiles and refuses, wasmtime-py compiles
    # and gives the canonical error.
    with IsolatedSandbox(policy, config=IsolationConfig(load_timeout=120.0)) as sandbox:
        sandbox.protections()
        begun = time.monotonic()
        with pytest.raises(ModuleError, match="_start"):
            sandbox.run(data)
        both = time.monotonic() - begun - start_seconds
    # A load timeout one load fits in and two do not.
    load_timeout = max(1.0, 0.6 * both)
    with IsolatedSandbox(policy, config=IsolationConfig(load_timeout=load_timeout)) as sandbox:
        sandbox.protections()  # the C-API worker is up: its start is not timed
        begun = time.monotonic()
        try:
            result = sandbox.run(data)
            outcome, message = result.outcome, result.message
        except ModuleError as exc:  # both loads finished within the one timeout
            outcome, message = None, exc.message
        elapsed = time.monotonic() - begun
    # On a loaded machine the timeout may already end the module's transfer to the worker
    # (`error`, the worker killed): within the one timeout all the same.
    assert outcome in (Outcome.TIMEOUT, None) or (
        outcome is Outcome.ERROR and "within the load timeout" in message), (outcome, message)
    if outcome is Outcome.TIMEOUT:
        assert "loading the module took longer than" in message
    # One load timeout and a wasmtime-py worker's start (with slack for a busy machine);
    # two loads, each within its own timeout, take about `both`, 1.7 times as long.
    bound = load_timeout + 1.5 * start_seconds + 0.25
    assert elapsed < bound, (elapsed, bound, both, start_seconds)

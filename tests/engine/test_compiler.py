"""Compiling in a child (`engine.compiler`): the compile guard's model may be wrong, the
child's CPU and address-space limits hold all the same, and this process survives what
Cranelift does when its memory is refused (it aborts).

Each attack is a module the guard prices cheaply (its model does not see what makes it
expensive): the child is what refuses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

from stockade import ModuleError, Policy, Sandbox
from stockade.engine import CompileGuard, EngineConfig
from stockade.engine.compiler import address_space, compile_in_child, compiles_in_child
from stockade.engine.fastpath import FastEngine


def live_parameters(params: int, blocks: int) -> bytes:
    """`params` i64 parameters live across `blocks` minimal `if`s, then summed: 1,000
    across 40,000 (205 KB) made Cranelift ask for 3.3 GB and abort the process; the
    guard predicted 0.3 s and a few MB."""
    types = " ".join(["i64"] * (params - 1))
    total = "local.get 1 " + " ".join(f"local.get {i} i64.add" for i in range(2, params))
    return bytes(wasmtime.wat2wasm(
        f'(module (func (export "f") (param i32 {types}) (result i64) '
        + "local.get 0 if end " * blocks + total + "))"))


def catch_clauses(clauses: int, calls: int) -> bytes:
    """Calls inside a try_table of `clauses` tag-specific catch clauses: 100 around 1,000
    calls (3 KB) compile for ~14 s."""
    tags = " ".join(f"(tag $t{i})" for i in range(clauses))
    catches = " ".join(f"(catch $t{i} $out)" for i in range(clauses))
    return bytes(wasmtime.wat2wasm(f'(module {tags} (func $f) (func (export "_start") '
                                   f'(block $out (try_table {catches} {"call $f " * calls}'
                                   '))))'))


def test_this_process_compiles_in_a_child() -> None:
    assert compiles_in_child()


def test_memory_refused_to_cranelift_is_a_refusal_not_an_abort() -> None:
    """Before: this module took the process compiling it down (SIGABRT), a host that
    loaded it in process with it."""
    data = live_parameters(1000, 40_000)
    with pytest.raises(ModuleError, match="needed more than .* of memory"):
        compile_in_child(EngineConfig().settings(), data, "live.wasm", 60.0, 128 * 1024**2)


def test_a_sandbox_survives_a_module_cranelift_cannot_compile(tmp_path: Path) -> None:
    """The same through `Sandbox.load` in this process (strict: a 272 MiB compile budget):
    refused, and the test process is still here to say so."""
    path = tmp_path / "live.wasm"
    path.write_bytes(live_parameters(1000, 40_000))
    policy = Policy.from_profile("strict")
    assert CompileGuard.for_limits(policy.limits).check_code(path.read_bytes(), "live.wasm")
    with pytest.raises(ModuleError, match="live.wasm: compiling it needed more than"):
        Sandbox(policy).load(path)
    assert os.getpid()  # still alive


def test_cpu_past_the_budget_is_refused() -> None:
    """A compile of ~14 s under a 1 s budget ends after about a second of CPU."""
    with pytest.raises(ModuleError, match="more than the policy's compile budget of 1 s"):
        compile_in_child(EngineConfig().settings(), catch_clauses(100, 1000), "catch.wasm",
                         1.0, None)


def test_invalid_code_is_explained() -> None:
    """Without a guard nothing validates first: the child reports wasmtime's reason."""
    broken = bytes(wasmtime.wat2wasm("(module (func))"))[:-2] + b"\x00\x00"
    with pytest.raises(ModuleError, match="^bad.wasm: invalid WebAssembly: "):
        compile_in_child(EngineConfig().settings(), broken, "bad.wasm", None, None)
    with FastEngine(EngineConfig(), max_instances=1) as engine, \
            pytest.raises(ModuleError, match="invalid WebAssembly"):
        engine.compile(broken, "bad.wasm")


def test_compiled_code_serves_both_engines() -> None:
    """The child's code deserializes on wasmtime-py's engine and on the C API's, for the
    settings it was given (wasmtime checks them: other settings are refused)."""
    data = bytes(wasmtime.wat2wasm('(module (func (export "f") (result i32) i32.const 7) '
                                   '(func (export "_start")))'))
    config = EngineConfig(fuel=False)
    code = compile_in_child(config.settings(), data, "seven.wasm", 10.0, 64 * 1024**2)
    engine = wasmtime.Engine(config.to_wasmtime())
    module = wasmtime.Module.deserialize(engine, code)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1)
    run = wasmtime.Instance(store, module, []).exports(store)["f"]
    assert isinstance(run, wasmtime.Func) and run(store) == 7
    with FastEngine(config, max_instances=1) as fast:
        fast.deserialize(code, "seven.wasm")
    other = EngineConfig(fuel=True)
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module.deserialize(wasmtime.Engine(other.to_wasmtime()), code)


def test_the_address_space_is_twice_the_memory_budget() -> None:
    """Cranelift maps more than it touches: CPython for WASI, 173 MB predicted, mapped
    426 MB compiling (298 MB resident) and compiles under the strict profile's budget."""
    budget = CompileGuard.for_limits(Policy.from_profile("strict").limits).memory_budget
    assert budget is not None and address_space(budget) == 2 * budget


def test_cpython_compiles_under_the_strict_budgets(python_wasm: Path) -> None:
    guard = CompileGuard.for_limits(Policy.from_profile("strict").limits)
    config = EngineConfig.for_limits(Policy.from_profile("strict").limits)
    code = compile_in_child(config.settings(), python_wasm.read_bytes(), "python.wasm",
                            guard.compile_budget, guard.memory_budget)
    assert len(code) > 1_000_000


def test_the_child_dies_with_the_process_that_wanted_the_code(tmp_path: Path) -> None:
    """A host killed mid-compile leaves no compile burning CPU behind (the child follows
    its parent: PR_SET_PDEATHSIG)."""
    module = tmp_path / "catch.wasm"
    module.write_bytes(catch_clauses(100, 2000))  # ~57 s of compile
    host = subprocess.Popen([sys.executable, "-c", (
        "import sys; from stockade.engine import EngineConfig; "
        "from stockade.engine.compiler import compile_in_child; "
        f"compile_in_child(EngineConfig().settings(), open({str(module)!r}, 'rb').read(), "
        "'catch.wasm', None, None)")])
    try:
        child = _first_child(host.pid, deadline=time.monotonic() + 20)
        time.sleep(0.5)  # past its start: compiling
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _first_child(pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.02)
    raise AssertionError("the host started no compiler child")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")

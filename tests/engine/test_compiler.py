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
from stockade.binary import encode_leb
from stockade.engine import CompileGuard, EngineConfig
from stockade.engine.compiler import address_space, compile_in_child, compiles_in_child
from stockade.engine.fastpath import FastEngine
from tests.conftest import stockade

MiB = 1024**2


def budgets(cpu: float | None, memory: int | None) -> CompileGuard:
    """A guard of these budgets and no other bound (a policy's floor does not apply)."""
    return CompileGuard(2**30, 2**30, 2**32, None, cpu, memory)


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
    with pytest.raises(ModuleError, match="needed more than 256MiB of memory"):
        compile_in_child(EngineConfig().settings(), data, "live.wasm",
                         budgets(60.0, 128 * MiB), False)


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
    """A compile of ~12 s (priced at 0.2 s) under a 1 s budget ends after a second."""
    with pytest.raises(ModuleError, match="more than the policy's compile budget of 1 s"):
        compile_in_child(EngineConfig().settings(), live_parameters(1000, 20_000),
                         "live.wasm", budgets(1.0, 4096 * MiB), False)


def branch_table(arity: int, targets: int) -> bytes:
    """A `br_table` of `targets` targets to a label of `arity` values: wasmtime's
    validator checks each target's types (1 MB of targets of 1,000 values: 7 s)."""
    def vector(items: list[bytes]) -> bytes:
        return encode_leb(len(items)) + b"".join(items)

    def section(number: int, content: bytes) -> bytes:
        return bytes([number]) + encode_leb(len(content)) + content

    kind = b"\x60" + vector([]) + vector([b"\x7f"] * arity)
    body = (b"\x00" + b"\x41\x00" * (arity + 1) + b"\x0e" + encode_leb(targets)
            + b"\x00" * (targets + 1) + b"\x0b")
    return (b"\0asm\x01\0\0\0" + section(1, vector([kind])) + section(3, vector([b"\x00"]))
            + section(10, vector([encode_leb(len(body)) + body])))


def test_validation_is_bounded_too() -> None:
    """Validating ran in the caller before any budget applied: 1,000-value labels under
    250,000 targets cost it seconds of CPU per run. Now the child validates: refused by
    its CPU limit, or, where it validates within the budget, by the guard's estimate
    after it; the caller spends nothing like the validation's ~2 s either way."""
    data = branch_table(1000, 400_000)
    spent = time.process_time()
    with pytest.raises(ModuleError, match="compile budget of 1 s"):
        compile_in_child(EngineConfig().settings(), data, "br.wasm",
                         budgets(1.0, 4096 * MiB), False)
    assert time.process_time() - spent < 0.5


def test_a_refusal_is_remembered() -> None:
    """The same bytes under the same budgets are refused again without a child (the
    fast path's refusal falls back to the standard sandbox, which asked again)."""
    data = live_parameters(1000, 20_000)
    guard = budgets(1.0, 4096 * MiB)
    with pytest.raises(ModuleError):
        compile_in_child(EngineConfig().settings(), data, "live.wasm", guard, False)
    started = time.monotonic()
    with pytest.raises(ModuleError, match="compile budget of 1 s"):
        compile_in_child(EngineConfig().settings(), data, "live.wasm", guard, False)
    assert time.monotonic() - started < 0.5


def test_a_refused_compile_dumps_no_core(tmp_path: Path) -> None:
    """A child killed by SIGABRT or SIGXCPU dumped a core holding its caller's
    environment into the caller's directory; it dumps none, and works in /."""
    script = ("import resource, os; resource.setrlimit(resource.RLIMIT_CORE, (-1, -1)); "
              "from stockade.engine import EngineConfig; "
              "from stockade.engine.compiler import compile_in_child; "
              "from stockade.engine.guard import CompileGuard; "
              f"data = open({str(tmp_path / 'live.wasm')!r}, 'rb').read()\n"
              "try:\n"
              "    compile_in_child(EngineConfig().settings(), data, 'live.wasm', "
              "CompileGuard(2**30, 2**30, 2**32, None, 60.0, 64 * 2**20), False)\n"
              "except Exception as exc: print(exc)")
    (tmp_path / "live.wasm").write_bytes(live_parameters(1000, 40_000))
    root_core = Path("/core")  # the child works in / (core_pattern "core": its directory)
    before = root_core.stat().st_mtime_ns if root_core.exists() else None
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "HOST_SECRET": "marker-4711"},
                          timeout=120, check=False)
    assert "needed more than 128MiB of memory" in done.stdout, done.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["live.wasm"]
    assert (root_core.stat().st_mtime_ns if root_core.exists() else None) == before


def test_invalid_code_is_explained() -> None:
    """Without a guard nothing validates first: the child reports wasmtime's reason."""
    broken = bytes(wasmtime.wat2wasm("(module (func))"))[:-2] + b"\x00\x00"
    with pytest.raises(ModuleError, match="^bad.wasm: invalid WebAssembly: "):
        compile_in_child(EngineConfig().settings(), broken, "bad.wasm", None, False)
    with FastEngine(EngineConfig(), max_instances=1) as engine, \
            pytest.raises(ModuleError, match="invalid WebAssembly"):
        engine.compile(broken, "bad.wasm")


def test_compiled_code_serves_both_engines() -> None:
    """The child's code deserializes on wasmtime-py's engine and on the C API's, for the
    settings it was given (wasmtime checks them: other settings are refused)."""
    data = bytes(wasmtime.wat2wasm('(module (func (export "f") (result i32) i32.const 7) '
                                   '(func (export "_start")))'))
    config = EngineConfig(fuel=False)
    code = compile_in_child(config.settings(), data, "seven.wasm", budgets(10.0, 64 * MiB),
                            False)
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
                            guard, config.tripwire)
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
        "'catch.wasm', None, False)")])
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


@pytest.mark.parametrize("command", [["run", "--isolate", "none"], ["compile"]])
def test_the_cli_refuses_it_in_one_line(command: list[str], tmp_path: Path) -> None:
    """`stockade compile` compiled without any bound (41 s and 2.8 GB for this module,
    then sealed it); both commands now refuse it under the profile's compile limits (an
    isolated worker compiles in place, under its cgroup's memory limit)."""
    path = tmp_path / "live.wasm"
    path.write_bytes(live_parameters(1000, 40_000))
    proc = stockade(*command, "--profile", "strict", str(path))
    assert proc.returncode == 126
    assert proc.stderr.decode().strip().splitlines() == [
        "stockade: live.wasm: compiling it needed more than 544MiB of memory (the policy's "
        "compile budget); refused"]
    assert not (tmp_path / "live.cwasm").exists()


def test_text_past_the_limit_is_refused_before_it_is_converted(tmp_path: Path) -> None:
    """WebAssembly text is converted in this process, at ~55 bytes of memory per byte (a
    64 MB .wat took 3.4 GB; a 24 MB one aborted a host under a 1.5 GB address space)."""
    path = tmp_path / "nested.wat"
    depth = 1_400_000  # 9.8 MB
    path.write_text("(module (func " + "(block " * depth + ")" * depth + "))")
    with pytest.raises(ModuleError, match="of WebAssembly text is past the 8MiB Stockade "
                                          "converts"):
        Sandbox(Policy.from_profile("default")).load(path)


def test_past_ten_thousand_sections_every_reader_stops(tmp_path: Path) -> None:
    """16 MiB of empty custom sections (5.6M, 3 bytes each) cost the signature check 16 s
    and 1.1 GB in the caller, `stockade inspect` 47 s and 2.2 GB; wasmtime accepts them.
    The guard refuses such a module (its lenient scans stop there: code past them would
    go unpriced), inspect says why in one line."""
    path = tmp_path / "customs.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
                     + b"\x00\x01\x00" * 10_001)
    with pytest.raises(ModuleError, match="more than 10,000 sections"):
        Sandbox(Policy.from_profile("default")).load(path)
    proc = stockade("inspect", str(path))
    assert proc.returncode == 126, proc.stdout
    assert b"more than 10,000 sections" in proc.stderr

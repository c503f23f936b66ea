"""Memory beside the limit: a GC heap next to linear memory.

wasmtime caps a module's GC heap (Wasm GC objects, and exception objects, which live in
it too) as a memory of its own, not within linear memory's limit. Before, a guest under
`--max-memory 32MiB` held 31 MiB of linear memory and 31 MiB of exception objects (62 MiB
in all). Now both proposals are off unless the policy allows them (`wasm_gc`), and then
each memory gets half of the limit. The guests say "L" per MiB of linear memory and "G"
per MiB held in the GC heap on standard output, so the test reads what they got.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.gateway.executor import Executors
from stockade.gateway.fastexec import FastFunction
from stockade.gateway.manifest import load_manifest
from stockade.invocation import Invocation
from stockade.result import Outcome
from tests.conftest import guest, stockade

MiB = 1024**2
LIMIT = 32  # MiB
INVALID_EXIT, MEMORY_EXIT = 126, 137
GUESTS = ("gc_heap_exceptions.wasm", "gc_heap_arrays.wasm")


def held(stdout: bytes) -> tuple[int, int]:
    """MiB of linear memory and of GC heap the guest got."""
    return stdout.count(b"L"), stdout.count(b"G")


@pytest.mark.parametrize("name", GUESTS)
def test_modules_using_the_gc_heap_are_refused_at_load_by_default(name: str) -> None:
    ran = stockade("run", "--max-memory", f"{LIMIT}MiB", str(guest(name)))
    err = ran.stderr.decode()
    assert ran.returncode == INVALID_EXIT, (ran.returncode, err)
    assert err.count("\n") == 1 and "--wasm-gc" in err, err
    assert ran.stdout == b""


# Refused for want of the proposals, though the module declares no GC type or tag, or
# in words the loader once matched (a recursion group): the loader asks wasmtime's
# validator with the proposals on (`engine.validity`), not its message.
@pytest.mark.parametrize("text", [
    '(module (rec (type (func))) (func (export "_start")))',
    '(module (func (export "_start") (drop (ref.i31 (i32.const 1)))))',
    '(module (func (export "_start") (block $h (try_table (catch_all $h) (nop)))))',
], ids=["rec-group", "i31", "tagless-try-table"])
@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
@pytest.mark.parametrize("isolate", ["none", "process"])
def test_every_refusal_for_want_of_the_proposals_names_the_flag(
        text: str, backend: str, isolate: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A confined worker on the C API cannot import wasmtime-py to ask: it failed (125).
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    path = tmp_path / "m.wat"
    path.write_text(text)
    refused = stockade("run", "--isolate", isolate, str(path))
    err = refused.stderr.decode()
    assert refused.returncode == INVALID_EXIT and err.count("\n") == 1, err
    assert "--wasm-gc" in err, err
    assert stockade("run", "--wasm-gc", str(path)).returncode == 0


def test_a_module_invalid_with_the_proposals_too_is_not_told_about_them(
        tmp_path: Path) -> None:
    path = tmp_path / "m.wat"
    path.write_text('(module (func (export "_start") (drop (ref.i31 (i64.const 1)))))')
    refused = stockade("run", str(path))
    err = refused.stderr.decode()
    assert refused.returncode == INVALID_EXIT and "--wasm-gc" not in err, err


@pytest.mark.parametrize("name", GUESTS)
@pytest.mark.parametrize(("backend", "isolate", "metered"), [
    ("capi", "none", False), ("capi", "none", True), ("wasmtime", "none", False),
    ("capi", "process", False), ("wasmtime", "process", True),
])
def test_linear_memory_and_gc_heap_together_stay_within_the_limit(
        name: str, backend: str, isolate: str, metered: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    # A scratch directory makes the run metered (the sandbox's own host calls).
    scratch = ("--scratch", "/tmp") if metered else ()
    ran = stockade("run", "--wasm-gc", "--max-memory", f"{LIMIT}MiB", "--isolate", isolate,
                   *scratch, str(guest(name)))
    linear, heap = held(ran.stdout)
    err = ran.stderr.decode()
    assert ran.returncode == MEMORY_EXIT, (ran.returncode, err)
    assert "memory_limit" in err, err
    assert linear >= LIMIT // 2 - 2 and heap >= 1, (linear, heap, err)  # both were used
    assert linear + heap <= LIMIT, (linear, heap, err)


def test_a_gateway_function_gets_the_same_split(tmp_path: Path) -> None:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "gc"\nroute = "/gc"\n'
                        f'module = "{guest("gc_heap_exceptions.wasm")}"\n'
                        f'[function.limits]\nmax_memory = "{LIMIT}MiB"\nwasm_gc = true\n'
                        # the guest keeps its exceptions in a table of 100,000
                        f'max_table_elements = 100000\n')
    executors = Executors("fast", threads=1)
    try:
        prepared = executors.prepare(load_manifest(manifest).functions[0])
        assert isinstance(prepared, FastFunction)
        result = prepared.run(Invocation())
    finally:
        executors.close()
    linear, heap = held(result.stdout)
    assert result.outcome is Outcome.MEMORY_LIMIT, result.message
    assert heap >= 1 and linear + heap <= LIMIT, (linear, heap)


def test_a_cwasm_compiled_with_the_gc_heap_runs_only_with_it(tmp_path: Path) -> None:
    compiled = tmp_path / "gc.cwasm"
    made = stockade("compile", "--wasm-gc", "-o", str(compiled),
                    str(guest("gc_heap_arrays.wasm")))
    assert made.returncode == 0, made.stderr.decode()
    ran = stockade("run", "--allow-precompiled", "--wasm-gc", "--max-memory", f"{LIMIT}MiB",
                   str(compiled))
    linear, heap = held(ran.stdout)
    assert ran.returncode == MEMORY_EXIT, ran.stderr.decode()
    assert heap >= 1 and linear + heap <= LIMIT, (linear, heap)
    # Without the flag the engine is another configuration: refused, one line.
    refused = stockade("run", "--allow-precompiled", str(compiled))
    assert refused.returncode != 0 and refused.stdout == b""
    assert refused.stderr.decode().count("\n") == 1, refused.stderr.decode()


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
def test_an_api_engine_with_the_gc_heap_gets_the_split_under_any_policy(backend: str) -> None:
    """The engine an API caller hands over decides what compiles: a GC engine under a
    policy without `wasm_gc` held 31 + 31 MiB under 32 MiB (found by review)."""
    from stockade import Policy, Sandbox
    from stockade.engine import EngineConfig
    from stockade.sandbox.capi import CapiSandbox

    policy = Policy.from_profile("default").with_limits(max_memory=f"{LIMIT}MiB")
    config = EngineConfig.for_limits(policy.with_limits(wasm_gc=True).limits)
    module = guest("gc_heap_exceptions.wasm")
    if backend == "capi":
        capi = CapiSandbox(policy, engine_config=config)
        try:
            result = capi.run(module)
        finally:
            capi.close()
    else:
        with Sandbox(policy, engine_config=config) as sandbox:
            result = sandbox.run(module)
    linear, heap = held(result.stdout)
    assert result.outcome is Outcome.MEMORY_LIMIT, result.message
    assert heap >= 1 and linear + heap <= LIMIT, (linear, heap)


START_FILL = """(module
  (type $bytes (array (mut i8)))
  (table $keep 1000 (ref null $bytes))
  (memory (export "memory") 1)
  (func $fill (local $i i32)
    (loop $more
      (table.set $keep (local.get $i) (array.new_default $bytes (i32.const 1048576)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 1000)))))
  (start $fill)
  (func (export "_start")))"""


@pytest.mark.parametrize(("what", "extra"), [
    ("filled by a start function", ("--profile", "strict")),  # no tripwire: it runs at
    ("filled by a start function, isolated", ("--isolate", "process")),  # instantiation
    ("one allocation past the cap", ()),
])
def test_a_full_gc_heap_is_the_memory_limit(what: str, extra: tuple[str, ...],
                                           tmp_path: Path) -> None:
    source = tmp_path / "fill.wat"
    source.write_text(START_FILL if "start" in what else
                      '(module (type $w (array (mut i64))) (memory (export "memory") 1) '
                      '(func (export "_start") '
                      '(drop (array.new_default $w (i32.const 1073741824)))))')
    ran = stockade("run", "--wasm-gc", "--max-memory", f"{LIMIT}MiB", *extra, str(source))
    err = ran.stderr.decode()
    assert ran.returncode == MEMORY_EXIT and "memory_limit" in err, (ran.returncode, err)

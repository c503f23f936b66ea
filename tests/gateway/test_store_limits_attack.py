"""A function's table limit holds on the gateway's fast path as it does in `stockade
run`: the gateway's engines share pool slots sized for 100,000 table elements, and the
fast run limited the store's memory only, so a guest under the strict profile (10,000
elements) grew a table by 90,000 under `stockade serve` (found by review)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import Invocation, Policy
from stockade.gateway.executor import Executors
from stockade.gateway.manifest import load_manifest
from stockade.isolate.factory import make_sandbox
from stockade.result import Outcome

# Grows a table by 90,000 elements and prints whether it could.
TABLE_GROW = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (data (i32.const 16) "grown\\n")
  (data (i32.const 32) "refused\\n")
  (func (export "_start")
    (if (i32.eq (table.grow $t (ref.null func) (i32.const 90000)) (i32.const -1))
      (then (i32.store (i32.const 0) (i32.const 32)) (i32.store (i32.const 4) (i32.const 8)))
      (else (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 6))))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


@pytest.fixture
def functions(tmp_path: Path) -> Iterator[dict[str, object]]:
    (tmp_path / "grow.wat").write_text(TABLE_GROW)
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f"""
[[function]]
name = "grow"
route = "/grow"
module = "{tmp_path / 'grow.wat'}"
profile = "strict"
isolate = "none"
""")
    executors = Executors("fast", threads=1)
    try:
        yield {spec.name: executors.prepare(spec)
               for spec in load_manifest(manifest).functions}
    finally:
        executors.close()


def test_the_gateway_fast_path_holds_the_table_limit(functions: dict[str, object]) -> None:
    grow = functions["grow"]
    inline, _ = grow.try_inline(Invocation())  # type: ignore[attr-defined]
    threaded = grow.run(Invocation())  # type: ignore[attr-defined]
    for result in (inline, threaded):
        assert result is not None and result.outcome is Outcome.EXITED, result
        assert result.stdout == b"refused\n"


@pytest.mark.parametrize("backend", ["capi", "wasmtime"])
def test_every_in_process_backend_holds_the_table_limit(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    module = tmp_path / "grow.wat"
    module.write_text(TABLE_GROW)
    sandbox = make_sandbox(Policy.from_profile("strict"), "none")
    try:
        result = sandbox.run(str(module))
    finally:
        sandbox.close()
    assert result.outcome is Outcome.EXITED and result.stdout == b"refused\n", result


def test_a_module_the_pool_refuses_is_named_in_the_error(tmp_path: Path) -> None:
    """A module mapped from the AoT cache was named by the entry's file, a descriptor
    under /proc: the gateway refused a module of two tables as "12: failed
    deserialization for: /proc/self/fd/12; ..." (found by review)."""
    from stockade.errors import ModuleError

    (tmp_path / "tables.wat").write_text("""(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table 1 funcref) (table 1 funcref)
  (func (export "_start")))""")
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "tables"\nroute = "/t"\n'
                        f'module = "{tmp_path / "tables.wat"}"\nisolate = "none"\n'
                        f'[function.limits]\nmax_tables = 4\n')
    executors = Executors("fast", threads=1)
    try:
        with pytest.raises(ModuleError) as refused:
            executors.prepare(load_manifest(manifest).functions[0])
    finally:
        executors.close()
    assert refused.value.message.startswith("tables.wat: "), refused.value.message

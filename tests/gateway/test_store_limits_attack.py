"""A function's table limit holds on the gateway's fast path as it does in `stockade
run`: the gateway's engines share pool slots sized for 100,000 table elements, and the
fast run limited the store's memory only, so a guest under the strict profile (10,000
elements) grew a table by 90,000 under `stockade serve` (found by review)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import Invocation, Policy
from stockade.engine.fastpath._engine import POOL_TABLES
from stockade.gateway.executor import Executors
from stockade.gateway.manifest import load_manifest
from stockade.isolate.factory import make_sandbox
from stockade.result import Outcome

from ..conftest import stockade

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


def _tables_module(path: Path, tables: int) -> Path:
    """A command module defining `tables` tables that answers 200 over CGI."""
    path.write_text(f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {" ".join(["(table 1 funcref)"] * tables)}
  (data (i32.const 16) "content-type: text/plain\\n\\ntables\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 33))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))""")
    return path


def _manifest(tmp_path: Path, module: Path, isolate: str, max_tables: int) -> Path:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[server]\nworkers = 1\n[[function]]\nname = "tables"\n'
                        f'route = "/t"\nmodule = "{module}"\nisolate = "{isolate}"\n'
                        f'[function.limits]\nmax_tables = {max_tables}\n')
    return manifest


def test_a_module_of_several_tables_runs_on_every_fast_path(tmp_path: Path) -> None:
    """The fast pool held one table per instance whatever the policy allowed: the gateway
    refused a module of two tables at start, and `stockade run` compiled it on every run
    before handing it to wasmtime-py."""
    from stockade.sandbox.capi import CapiSandbox

    module = _tables_module(tmp_path / "tables.wat", 3)
    executors = Executors("fast", threads=1)
    try:
        function = executors.prepare(load_manifest(_manifest(tmp_path, module, "none", 4))
                                     .functions[0])
        inline, _ = function.try_inline(Invocation())  # type: ignore[attr-defined]
        threaded = function.run(Invocation())  # type: ignore[attr-defined]
    finally:
        executors.close()
    sandbox = CapiSandbox(Policy())
    try:
        alone = sandbox.run(module)
        standard = sandbox._standard  # noqa: SLF001 - the fallback it must not need
    finally:
        sandbox.close()
    for result in (inline, threaded, alone):
        assert result is not None and result.outcome is Outcome.EXITED, result
        assert result.stdout.endswith(b"\n\ntables\n")
    assert standard is None


def test_a_module_the_pool_refuses_is_named_in_the_error(tmp_path: Path) -> None:
    """A module mapped from the AoT cache was named by the entry's file, a descriptor
    under /proc: the gateway refused a module of two tables as "12: failed
    deserialization for: /proc/self/fd/12; ..." (found by review)."""
    from stockade.errors import ModuleError

    module = _tables_module(tmp_path / "tables.wat", POOL_TABLES + 1)
    manifest = _manifest(tmp_path, module, "none", POOL_TABLES + 4)
    executors = Executors("fast", threads=1)
    try:
        with pytest.raises(ModuleError) as refused:
            executors.prepare(load_manifest(manifest).functions[0])
    finally:
        executors.close()
    assert refused.value.message.startswith("tables.wat: "), refused.value.message


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_a_function_the_gateway_cannot_load_is_one_line(tmp_path: Path, isolate: str) -> None:
    """A pool worker that could not load a function died with two tracebacks and the
    gateway said only that the worker exited with code 1."""
    module = _tables_module(tmp_path / "tables.wat", POOL_TABLES + 1)
    refused = stockade("serve", "-c", str(_manifest(tmp_path, module, isolate,
                                                    POOL_TABLES + 4)), timeout=120)
    log = refused.stderr.decode()
    assert refused.returncode == 125 and "Traceback" not in log, log
    assert "function tables: tables.wat: " in log and "exceeds the per-instance limit" in log


def test_limits_past_the_fast_pool_are_served_by_the_sandbox(tmp_path: Path) -> None:
    """A function allowed more memory than the fast pool's slots stopped `serve` at start
    ("FastEngine max_memory ... out of range") under the default executor (the second
    fix review)."""
    module = _tables_module(tmp_path / "big.wat", 1)
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "big"\nroute = "/big"\nmodule = "{module}"\n'
                        f'isolate = "none"\n[function.limits]\nmax_memory = "5GiB"\n')
    executors = Executors("auto", threads=1)
    try:
        function = executors.prepare(load_manifest(manifest).functions[0])
        result = function.run(Invocation())  # type: ignore[attr-defined]
    finally:
        executors.close()
    assert function.kind == "sandbox"
    assert result.outcome is Outcome.EXITED and result.stdout.endswith(b"\n\ntables\n")

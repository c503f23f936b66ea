"""Attacks on the isolated C-API worker and its wasmtime-py fallback: whichever worker a
hostile module lands in keeps RLIMIT_AS and the strict limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import ModuleError, Policy
from stockade.engine.fastpath._engine import POOL_TABLES
from stockade.isolate import IsolatedSandbox
from tests.conftest import guest


def _address_space(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no address space line")


def test_both_workers_run_under_a_finite_address_space_limit() -> None:
    with IsolatedSandbox(Policy.from_profile("strict").with_limits(timeout=5.0)) as sandbox:
        assert sandbox.run(guest("hello.wasm")).ok
        assert sandbox.worker_backend == "capi"
        pid = sandbox.worker_pid
        assert pid is not None
        soft, hard = _address_space(pid)
        assert soft != "unlimited" and hard != "unlimited", (soft, hard)
        # Bytes the C API leaves to wasmtime-py: the wasmtime-py worker that answers has
        # its own limit too.
        with pytest.raises(ModuleError):
            sandbox.run(b"\0asm\x02\0\0\0")
        assert sandbox.worker_backend == "wasmtime"
        pid = sandbox.worker_pid
        assert pid is not None
        soft, hard = _address_space(pid)
        assert soft != "unlimited" and hard != "unlimited", (soft, hard)


# More tables than the C-API pool holds per instance, within the policy's max_tables: the
# C-API worker answers `fallback` and a wasmtime-py worker runs the guest.
_TABLES = POOL_TABLES + 1
_MANY_TABLES = "(module " + "(table 1 funcref) " * _TABLES + """(memory 1)
  (func (export "_start") %s))"""
_GROW = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable"
_SPIN = "(loop $l (br $l))"


@pytest.mark.parametrize(("body", "outcomes"), [
    (_GROW, ("trap", "memory_limit")),
    (_SPIN, ("fuel_exhausted", "timeout")),
])
def test_limits_hold_for_a_module_the_c_api_sends_to_wasmtime_py(
        body: str, outcomes: tuple[str, ...]) -> None:
    policy = Policy.from_profile("strict").with_limits(timeout=5.0, fuel=50_000_000,
                                                       max_tables=_TABLES)
    with IsolatedSandbox(policy) as sandbox:
        result = sandbox.run((_MANY_TABLES % body).encode())
        assert sandbox.worker_backend == "wasmtime"  # it did fall back
        assert result.outcome.value in outcomes, (result.outcome, result.message)
        assert result.usage.peak_memory_bytes <= policy.limits.max_memory


def test_a_module_that_falls_back_does_not_respawn_workers_on_every_run() -> None:
    module = (_MANY_TABLES % "").encode()
    with IsolatedSandbox(Policy.from_profile("strict").with_limits(max_tables=_TABLES)) \
            as sandbox:
        assert sandbox.run(module).ok
        pids = set()
        for _ in range(3):
            assert sandbox.run(module).ok
            pids.add(sandbox.worker_pid)
        assert len(pids) == 1, f"{len(pids)} workers for 3 runs of one module"


_DECLARED = {
    # A table declared past strict's 10,000 elements, one grown past it, memory declared
    # past 16 MiB, and memory grown past it (memory.grow answers -1; 256 pages at most).
    "table_declared": '(module (table 50000 funcref) (memory (export "memory") 1) '
                      '(func (export "_start")))',
    "table_grown": '(module (table 1 funcref) (memory (export "memory") 1) '
                   '(func (export "_start") (if (i32.ne (table.grow 0 (ref.null func) '
                   '(i32.const 50000)) (i32.const -1)) (then unreachable))))',
    "memory_declared": '(module (memory (export "memory") 300) (func (export "_start")))',
    "memory_grown": '(module (memory (export "memory") 255) (func (export "_start") '
                    '(drop (memory.grow (i32.const 2))) '
                    '(if (i32.gt_u (memory.size) (i32.const 256)) (then unreachable))))',
}


@pytest.mark.parametrize("name", sorted(_DECLARED))
def test_declared_and_grown_tables_and_memories_meet_strict_on_every_backend(
        tmp_path: Path, name: str) -> None:
    from stockade import Sandbox
    from stockade.sandbox.capi import CapiSandbox

    module = tmp_path / f"{name}.wat"
    module.write_text(_DECLARED[name])
    policy = Policy.from_profile("strict")
    seen = {}
    for kind in (CapiSandbox, Sandbox, IsolatedSandbox):
        with kind(policy) as sandbox:
            result = sandbox.run(module)
        assert result.usage.peak_memory_bytes <= policy.limits.max_memory
        seen[kind.__name__] = (result.outcome.value, result.exit_code)
    assert len(set(seen.values())) == 1, seen  # the same answer everywhere
    assert next(iter(seen.values()))[0] in ("exited", "trap", "memory_limit"), seen

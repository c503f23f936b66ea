"""The compile guard: module size, function body size and locals, checked before compiling."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, ModuleError, Outcome, Policy, Sandbox
from stockade.engine import CompileGuard
from stockade.engine.guard import (
    COMPILE_CEILING,
    COMPILE_FLOOR,
    code_shape,
    compile_budget,
    compile_cost,
    data_size,
)
from tests.conftest import GUESTS, REAL, guest, stockade


def test_code_shape_of_real_module(python_wasm: Path) -> None:
    shape = code_shape(python_wasm.read_bytes())
    assert len(shape) > 10_000
    assert max(body for body, _ in shape) < 256 * 1024  # fits even the strict profile


def test_code_shape_of_truncated_module_is_partial() -> None:
    data = guest("hello.wasm").read_bytes()
    assert len(code_shape(data[: len(data) // 2])) < len(code_shape(data))


def test_compile_bomb_is_refused_before_compiling(tmp_path: Path) -> None:
    bomb = GUESTS / "attacks" / "compile_bomb.wasm"
    copy = tmp_path / "bomb.wasm"  # a path the AoT cache has never seen
    copy.write_bytes(bomb.read_bytes() + b"\x00\x03\x01x\x00")  # plus a custom section
    for profile in ("strict", "default"):
        with pytest.raises(ModuleError, match="compile cost"):
            Sandbox(Policy.from_profile(profile)).run(copy)


def test_locals_limit() -> None:
    module = b'(module (func (export "_start") (local i32 i32 i32 i32 i32)))'
    policy = Policy().with_limits(max_locals=4)
    with pytest.raises(ModuleError, match="5 locals"):
        Sandbox(policy).run(module)


def test_module_size_limit_reads_nothing(tmp_path: Path) -> None:
    big = tmp_path / "big.wasm"
    with big.open("wb") as handle:
        handle.truncate(65 * 1024**2)  # sparse: the check must come from stat alone
    with pytest.raises(ModuleError, match="module size limit of 64MiB"):
        Sandbox(Policy.from_profile("strict")).run(big)


def test_guard_messages_name_the_limit() -> None:
    guard = CompileGuard(max_module_size=10, max_function_size=10, max_locals=1)
    with pytest.raises(ModuleError, match="10B"):
        guard.check_size(11, "m.wasm")


def test_threads_module_is_denied_naming_thread_spawn() -> None:
    result = Sandbox().run(GUESTS / "attacks" / "threads.wasm", Invocation())
    assert (result.outcome, result.exit_code) == (Outcome.DENIED, 126)
    assert "thread-spawn" in result.message


def test_data_size_reads_every_segment() -> None:
    # Offsets whose LEB bytes look like `end` (11) must not end the expression early.
    module = wasmtime.wat2wasm(
        '(module (memory 1) (data (i32.const 11) "abc") (data "passive-12")'
        ' (data (i32.const 0x0B0B) "x"))')
    assert data_size(bytes(module)) == 3 + 10 + 1
    assert data_size(guest("hello.wasm").read_bytes()) < 16 * 1024


def test_data_larger_than_the_memory_limit_is_refused_before_compiling(
        tmp_path: Path) -> None:
    huge = tmp_path / "huge_data.wasm"  # a path the AoT cache has never seen
    huge.write_bytes((GUESTS / "attacks" / "huge_data.wasm").read_bytes()
                     + b"\x00\x03\x01y\x00")
    with pytest.raises(ModuleError, match="data segments hold 48MiB.*memory limit of 16MiB"):
        Sandbox(Policy.from_profile("strict")).run(huge)
    result = Sandbox(Policy.from_profile("default")).run(huge)  # 128 MiB: it fits
    assert result.outcome is Outcome.EXITED


def _fresh(tmp_path: Path, name: str) -> Path:
    """A copy of a built guest with a digest the AoT cache has never seen."""
    copy = tmp_path / name.replace("/", "_")
    copy.write_bytes(guest(name).read_bytes() + b"\x00\x05\x04salt")
    return copy


def test_split_compile_bomb_is_refused_within_a_short_timeout(tmp_path: Path) -> None:
    # Three 511 KiB bodies of 1,999 locals pass every per-function check of `default`
    # and cost ~30 s of CPU together: the total budget refuses them before compiling.
    bomb = _fresh(tmp_path, "attacks/compile_bomb_split.wasm")
    shape = code_shape(bomb.read_bytes())
    limits = Policy().limits
    assert all(body <= limits.max_function_size and n <= limits.max_locals for body, n in shape)
    policy = Policy().with_limits(timeout=1.0)
    begun = time.perf_counter()
    with pytest.raises(ModuleError, match="compile budget of 15 s"):
        Sandbox(policy).run(bomb)
    assert time.perf_counter() - begun < 1.1  # refused, not compiled
    done = stockade("run", "--timeout", "1s", str(bomb))
    assert done.returncode == 126
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "compile budget" in lines[0] and "--timeout" in lines[0], lines


def test_the_compile_budget_follows_the_timeout() -> None:
    bomb = guest("attacks/compile_bomb_split.wasm").read_bytes()
    assert compile_cost(code_shape(bomb)) > COMPILE_FLOOR
    # A policy that lets a guest run a minute may let it compile for as long.
    CompileGuard.for_limits(Policy().limits).check_code(bomb, "bomb")
    with pytest.raises(ModuleError, match="compile budget"):
        CompileGuard.for_limits(Policy().with_limits(timeout=5.0).limits).check_code(bomb, "b")
    assert compile_budget(None) == COMPILE_CEILING


@pytest.mark.parametrize("profile", ["strict", "default", "permissive"])
def test_real_modules_fit_every_profile_even_with_a_short_timeout(
        python_wasm: Path, profile: str) -> None:
    # CPython (26 MB) and QuickJS load under every profile, whatever the timeout: the
    # floor of the budget is above their predicted cost (checked without compiling).
    limits = Policy.from_profile(profile).with_limits(timeout=0.1).limits
    guard = CompileGuard.for_limits(limits)
    for module in (python_wasm, REAL / "quickjs.wasm"):
        guard.check_code(module.read_bytes(), module.name)

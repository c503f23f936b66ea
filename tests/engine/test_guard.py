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
    with pytest.raises(ModuleError, match="compile budget of 13 s"):
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
def test_real_modules_fit_every_profile(python_wasm: Path, profile: str) -> None:
    # CPython (26 MB) and QuickJS load under every profile, even with a 0.1 s timeout
    # (the floor of the budget); checked without compiling.
    short = CompileGuard.for_limits(Policy.from_profile(profile).with_limits(timeout=0.1).limits)
    for module in (python_wasm, REAL / "quickjs.wasm"):
        short.check_code(module.read_bytes(), module.name)


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _section(kind: int, items: list[bytes]) -> bytes:
    body = _leb(len(items)) + b"".join(items)
    return bytes([kind]) + _leb(len(body)) + body


def many_functions(count: int) -> bytes:
    """`count` empty functions (4 bytes each) and a `_start`: the attacker's cheapest
    module per function, far under every per-function bound."""
    return (b"\0asm\1\0\0\0" + _section(1, [b"\x60\x00\x00"])
            + _section(3, [b"\x00"] * (count + 1))
            + _section(7, [b"\x06_start\x00" + _leb(count)])
            + _section(10, [b"\x02\x00\x0b"] * (count + 1)))


@pytest.mark.parametrize("profile", ["strict", "default"])
def test_many_empty_functions_are_refused_before_compiling(tmp_path: Path,
                                                           profile: str) -> None:
    # 300k empty functions, 1.2 MB: ~24 s of CPU and ~1.8 GB to compile. Refused, quickly,
    # in process and in the hardened worker (where compiling it was an OOM kill).
    bomb = tmp_path / "many.wasm"
    bomb.write_bytes(many_functions(300_000))
    policy = Policy.from_profile(profile)
    with pytest.raises(ModuleError, match="compile"):
        CompileGuard.for_limits(policy.limits).check_code(bomb.read_bytes(), "many.wasm")
    for args in (["--timeout", "1s"], []):
        begun = time.monotonic()
        done = stockade("run", "--profile", profile, *args, str(bomb), timeout=120)
        assert done.returncode == 126, done.stderr
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "compil" in lines[0], lines
        assert time.monotonic() - begun < 20  # refused, not compiled (generous: 2 shared cores)


def test_a_short_timeout_buys_no_long_compile() -> None:
    # 200k empty functions cost ~14 s of CPU: more than a 1 s policy may spend compiling,
    # which a 60 s one allows (memory allowing).
    bomb = many_functions(200_000)
    roomy = Policy().with_limits(max_memory=2 * 1024**3)
    with pytest.raises(ModuleError, match="compile budget"):
        CompileGuard.for_limits(roomy.with_limits(timeout=1.0).limits).check_code(bomb, "b")
    CompileGuard.for_limits(roomy.with_limits(timeout=60.0).limits).check_code(bomb, "b")
    assert compile_budget(1.0) < 15

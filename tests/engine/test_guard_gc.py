"""The compile guard counts GC work: code whose few bytes compile to much.

`struct.new_default` (3 bytes) initialises every field of a struct type of up to
10,000 fields, and every read or write of a reference field compiles to an inline
barrier: measured here, 100 `struct.new_default` of a 10,000-field struct (a 20 KB
module) compiled for 8-16 s, and 10,000 reference `struct.get`s (70 KB) for 2.2 s and
300 MB. The guard charged both by their body bytes only and let them compile under any
timeout. Each attack below was allowed before `allocwork`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from stockade import ModuleError, Policy, Sandbox
from stockade.allocwork import REF_ACCESS, REF_INIT, gc_work
from stockade.binary import code_shape, encode_leb
from stockade.compilecost import COMPILE_HEAVY, compile_cost, compile_memory
from stockade.engine import CompileGuard
from stockade.inspect.report import inspect_module
from tests.conftest import guest


def wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def wide_struct_bomb(fields: int, sites: int, field: str = "v128") -> bytes:
    return wasm(f'(module (type $s (struct {" ".join([f"(field {field})"] * fields)})) '
                f'(func (export "_start") {" ".join(["(drop (struct.new_default $s))"] * sites)}))')


def ref_access_bomb(sites: int) -> bytes:
    return wasm('(module (type $s (struct (field (mut anyref)))) '
                '(func (param (ref $s)) '
                + " ".join(["(drop (struct.get $s 0 (local.get 0)))"] * sites)
                + ') (func (export "_start")))')


def short_policy() -> Policy:
    return Policy.from_profile("default").with_limits(timeout=0.5)


@pytest.mark.parametrize("module", [
    pytest.param(lambda: wide_struct_bomb(10_000, 100), id="struct.new_default v128"),
    pytest.param(lambda: wide_struct_bomb(10_000, 30, "anyref"), id="struct.new_default ref"),
    pytest.param(lambda: ref_access_bomb(100_000), id="struct.get ref"),
])
def test_gc_compile_bombs_are_refused_before_compiling(module: object, tmp_path: Path
                                                       ) -> None:
    data = module()  # type: ignore[operator]
    path = tmp_path / "bomb.wasm"  # never in the AoT cache
    path.write_bytes(data)
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), data)
    with pytest.raises(ModuleError, match="compile"):
        Sandbox(short_policy()).load(path)


def test_gc_work_counts_fields_and_barriers() -> None:
    data = wasm('(module (type $s (struct (field anyref) (field i32) (field (mut i8)))) '
                '(type $a (array (mut anyref))) '
                '(func (drop (struct.new_default $s))) '
                '(func (param (ref $s)) (drop (struct.get $s 0 (local.get 0))) '
                '  (drop (struct.get $s 1 (local.get 0)))) '
                '(func (drop (array.new_fixed $a 3 (ref.null any) (ref.null any) '
                '  (ref.null any)))) '
                '(func (param (ref $a)) (array.set $a (local.get 0) (i32.const 0) '
                '  (ref.null any))))')
    assert gc_work(data) == [REF_INIT + 2, REF_ACCESS, 3 * REF_INIT, REF_ACCESS]


def test_rec_groups_and_subtypes_are_read() -> None:
    data = wasm('(module (rec (type $a (sub (struct (field (ref null $b))))) '
                '(type $b (sub final $a (struct (field (ref null $b)) (field f64))))) '
                '(func (drop (struct.new_default $b))))')
    assert gc_work(data) == [REF_INIT + 1]


def test_modules_without_gc_types_cost_what_they_did(python_wasm: Path) -> None:
    for data in (python_wasm.read_bytes(), guest("hello.wasm").read_bytes()):
        assert gc_work(data) == []
        shape = code_shape(data)
        assert compile_cost(shape, gc_work(data)) == compile_cost(shape)
        assert compile_memory(shape, gc_work(data)) == compile_memory(shape)


def _hidden_behind_unknown(sites: int) -> bytes:
    """A wide-struct bomb whose body starts with an opcode no reader here knows (0xE0):
    a reader that gave up there would count nothing after it."""
    plain = wide_struct_bomb(10_000, sites)
    marker = b"\xfb\x01\x00\x1a" * sites  # struct.new_default 0; drop
    start = plain.index(marker)
    # The body: its size, no locals (0x00), then the instructions.
    size_at = start - 1 - len(encode_leb(len(marker) + 2))
    assert plain[size_at:start - 1] == encode_leb(len(marker) + 2)
    body = b"\x00\xe0" + marker + b"\x0b"
    return plain[:size_at] + encode_leb(len(body)) + body + plain[start + len(marker) + 1:]


def test_code_the_reader_cannot_decode_is_charged_as_the_worst() -> None:
    data = _hidden_behind_unknown(100)
    body_units = gc_work(data)
    assert len(body_units) == 1
    assert body_units[0] >= gc_work(wide_struct_bomb(10_000, 100))[0]


def test_the_guard_and_inspect_predict_the_same_cost() -> None:
    data = wide_struct_bomb(10_000, 300)
    report = inspect_module(data, "bomb.wasm")
    assert report.compile_cost == compile_cost(code_shape(data), gc_work(data))
    assert report.compile_cost > COMPILE_HEAVY
    assert report.as_dict()["compile"]["gc_units"] == 300 * 10_000
    assert any("compil" in finding.message for finding in report.findings)
    guard = CompileGuard.for_limits(short_policy().limits)
    with pytest.raises(ModuleError, match=f"about {report.compile_cost:.0f} s of CPU"):
        guard.check_code(data, "bomb.wasm")


def test_small_gc_programs_still_run() -> None:
    module = ('(module (memory (export "memory") 1) '
              '(type $p (struct (field $x (mut i32)) (field $next (mut (ref null $p))))) '
              '(func (export "_start") (local $a (ref null $p)) '
              '  (local.set $a (struct.new $p (i32.const 41) (ref.null $p))) '
              '  (struct.set $p $x (local.get $a) (i32.add (struct.get $p $x (local.get $a)) '
              '    (i32.const 1))) '
              '  (if (i32.ne (struct.get $p $x (local.get $a)) (i32.const 42)) '
              '    (then unreachable))))')
    result = Sandbox(Policy.from_profile("default")).run(wasm(module))
    assert result.outcome.value == "exited" and result.exit_code == 0, result

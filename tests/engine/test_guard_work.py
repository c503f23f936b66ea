"""The compile guard counts code work: code whose few bytes compile to much.

`struct.new_default` (3 bytes) initialises every field of a struct type of up to
10,000 fields, and every read or write of a reference field compiles to an inline
barrier: measured here, 100 `struct.new_default` of a 10,000-field struct (a 20 KB
module) compiled for 8-16 s, and 10,000 reference `struct.get`s (70 KB) for 2.2 s and
300 MB. Blocks with results, `call_indirect` and table instructions cost with the square
of their number in one body: 10,000 `table.copy`s (110 KB) compiled for 25 s, 30,000
`if`s with results (330 KB) for 15 s. The guard charged all of them by their body bytes
only and let them compile under any timeout. Each attack below was allowed before
`codework`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wasmtime

from stockade import ModuleError, Policy, Sandbox, codework
from stockade.binary import code_shape, encode_leb
from stockade.codework import (
    HANDLER_WEIGHT,
    LIVE_VALUE,
    REF_ACCESS,
    REF_INIT,
    SITE_WEIGHTS,
    TRAMPOLINE_BASE,
    TRAMPOLINE_PARAM,
    TRAMPOLINE_RESULT,
    Work,
    code_work,
)
from stockade.compilecost import COMPILE_FLOOR, COMPILE_HEAVY, compile_cost, compile_memory
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


def heavy_sites_bomb(instruction: str, sites: int) -> bytes:
    return wasm('(module (memory 1) (table 1000 funcref) (type $v (func)) (func $g) '
                '(elem $e func $g) (func (export "_start") '
                + " ".join([instruction] * sites) + "))")


TABLE_COPY = "(table.copy (i32.const 0) (i32.const 1) (i32.const 100))"
RESULT_IF = "(drop (if (result i32) (i32.const 1) (then (i32.const 0)) (else (i32.const 1))))"


def function_work(data: bytes) -> list[Work]:
    """`code_work` of the defined functions only (no initialisers, no trampolines)."""
    return code_work(data)[:len(code_shape(data))]


def gc_units(data: bytes) -> list[int]:
    return [units for units, _, _ in function_work(data)]


def short_policy() -> Policy:
    """A short timeout, with the GC and exception proposals these bombs use."""
    return Policy.from_profile("default").with_limits(timeout=0.5, wasm_gc=True)


def refused_on_load(data: bytes, tmp_path: Path) -> None:
    """`data`, valid and cheap by its bytes alone, is refused by the guard at load."""
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), data)
    assert compile_cost(code_shape(data)) < 1.0  # what the bytes alone say
    path = tmp_path / "bomb.wasm"  # never in the AoT cache
    path.write_bytes(data)
    with pytest.raises(ModuleError, match="compile"):
        Sandbox(short_policy()).load(path)


@pytest.mark.parametrize("module", [
    pytest.param(lambda: wide_struct_bomb(10_000, 100), id="struct.new_default v128"),
    pytest.param(lambda: wide_struct_bomb(10_000, 30, "anyref"), id="struct.new_default ref"),
    pytest.param(lambda: ref_access_bomb(100_000), id="struct.get ref"),
    pytest.param(lambda: heavy_sites_bomb(TABLE_COPY, 30_000), id="table.copy"),
    pytest.param(lambda: heavy_sites_bomb(RESULT_IF, 40_000), id="if with results"),
    pytest.param(lambda: heavy_sites_bomb("(call_indirect (type $v) (i32.const 0))", 40_000),
                 id="call_indirect"),
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
    assert gc_units(data) == [REF_INIT + 2, REF_ACCESS, 3 * REF_INIT, REF_ACCESS]


def test_rec_groups_and_subtypes_are_read() -> None:
    data = wasm('(module (rec (type $a (sub (struct (field (ref null $b))))) '
                '(type $b (sub final $a (struct (field (ref null $b)) (field f64))))) '
                '(func (drop (struct.new_default $b))))')
    assert gc_units(data) == [REF_INIT + 1]


def test_heavy_sites_are_weighed_per_function() -> None:
    sites = ('(drop (block (result i32) (i32.const 0))) (block (nop)) '
             '(call_indirect (type $v) (i32.const 0)) '
             '(table.copy (i32.const 0) (i32.const 0) (i32.const 0)) ')
    exact = 1 + 1 + SITE_WEIGHTS[(0xFC, 14)]
    data = wasm('(module (table 1 funcref) (type $v (func)) '
                f'(func {sites * 32}) (func {sites}) (func (loop (nop))))')
    big, small, empty = (count for _, count, _ in function_work(data))
    assert big == pytest.approx(32 * exact)
    assert small == pytest.approx(exact)
    assert empty == 0


def test_real_modules_cost_about_what_they_did(python_wasm: Path) -> None:
    """CPython for WASI: its heavy sites, the values its calls move (255,000, at most
    4,203 in one function) and its 5,542 trampolines add under 1.5 s to its ~10 s
    prediction and a few MB to its memory, so it still compiles under the compile floor;
    no GC work."""
    for data in (python_wasm.read_bytes(), guest("hello.wasm").read_bytes()):
        work = code_work(data)
        assert not any(units for units, _, _ in work)
        shape = code_shape(data)
        assert compile_cost(shape, work) - compile_cost(shape) < 1.5
        assert compile_memory(shape, work) - compile_memory(shape) < 8 * 1024**2
    assert compile_cost(code_shape(python_wasm.read_bytes()),
                        code_work(python_wasm.read_bytes())) < COMPILE_FLOOR


def _hidden_behind_unknown(plain: bytes, marker: bytes) -> bytes:
    """`plain`, whose one body holds `marker` and its `end` after no locals, with an
    opcode no reader here knows (0xe0) first in that body: a reader that gave up there
    would count nothing after it."""
    start = plain.index(marker)
    size = encode_leb(len(marker) + 2)  # no locals (0x00), the code, end (0x0b)
    size_at = start - 1 - len(size)
    assert plain[size_at:start - 1] == size
    body = b"\x00\xe0" + marker + b"\x0b"
    return plain[:size_at] + encode_leb(len(body)) + body + plain[start + len(marker) + 1:]


def test_code_the_reader_cannot_decode_is_charged_as_the_worst() -> None:
    bomb = wide_struct_bomb(10_000, 100)
    hidden = _hidden_behind_unknown(bomb, b"\xfb\x01\x00\x1a" * 100)  # new_default; drop
    assert gc_units(hidden)[0] >= gc_units(bomb)[0]
    copies = wasm("(module (table 1 funcref) (func " + TABLE_COPY * 3000 + "))")
    one = b"\x41\x00\x41\x01\x41\xe4\x00\xfc\x0e\x00\x00"  # table.copy 0 0, operands
    hidden = _hidden_behind_unknown(copies, one * 3000)
    assert code_work(hidden)[0][1] >= code_work(copies)[0][1] > 0


def test_the_guard_and_inspect_predict_the_same_cost() -> None:
    data = wide_struct_bomb(10_000, 300)
    report = inspect_module(data, "bomb.wasm")
    assert report.compile_cost == compile_cost(code_shape(data), code_work(data))
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
    result = Sandbox(Policy.from_profile("default").with_limits(wasm_gc=True)).run(wasm(module))
    assert result.outcome.value == "exited" and result.exit_code == 0, result


# -- found by review: work the first model did not count ---------------------------------

def _valued_branches(count: int) -> bytes:
    return wasm('(module (func (export "_start") (param i32) (result i32) '
                '(block (result i32) '
                + "(drop (br_if 0 (i32.const 0) (local.get 0))) " * count
                + "(i32.const 1))))")


def _ref_global_traffic(count: int) -> bytes:
    return wasm('(module (global $g (mut anyref) (ref.null any)) (func (export "_start") '
                + "(global.set $g (global.get $g)) " * count + "))")


def _ref_array(instruction: str, count: int) -> bytes:
    return wasm('(module (type $a (array (mut anyref))) '
                '(func (export "_start") (local $x (ref null $a)) '
                + f"{instruction} " * count + "))")


ARRAY_FILL = "(array.fill $a (local.get $x) (i32.const 0) (ref.null any) (i32.const 5))"
ARRAY_COPY = ("(array.copy $a $a (local.get $x) (i32.const 0) (local.get $x) (i32.const 1) "
              "(i32.const 2))")


@pytest.mark.parametrize("module", [
    # 30,000 branches carrying a value into one block (210 KB): 25 s, predicted 0.3 s.
    pytest.param(lambda: _valued_branches(30_000), id="valued br_if"),
    # 25,000 reads and writes of an anyref global (100 KB): 12.9 s and 1.4 GiB.
    pytest.param(lambda: _ref_global_traffic(25_000), id="anyref global"),
    # 10,000 array.fills of anyref arrays (110 KB): 18.6 s and 3.9 GiB.
    pytest.param(lambda: _ref_array(ARRAY_FILL, 10_000), id="array.fill ref"),
    # 7,000 array.copys in one body: 12.7 s.
    pytest.param(lambda: _ref_array(ARRAY_COPY, 7_000), id="array.copy ref"),
    # 100 globals initialised with a 10,000-field struct each (20 KB): ~10 s to load.
    pytest.param(lambda: wasm('(module (type $s (struct '
                              + "(field v128) " * 10_000 + ")) "
                              + "(global (ref $s) (struct.new_default $s)) " * 100
                              + ' (func (export "_start")))'), id="global initialisers"),
])
def test_reviewed_bombs_are_refused(module: object) -> None:
    data = module()  # type: ignore[operator]
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), data)
    with pytest.raises(ModuleError, match="compil"):
        CompileGuard.for_limits(short_policy().limits).check_code(data, "bomb.wasm")


def test_branches_without_values_and_to_loops_are_not_heavy() -> None:
    plain = wasm('(module (func (param i32) (block '
                 + "(br_if 0 (local.get 0)) " * 500 + ") (loop "
                 + "(br_if 0 (local.get 0)) " * 500 + ")))")
    assert function_work(plain) == [(0, 0.0, 0)]
    assert code_work(_valued_branches(500))[0][1] >= 500


def test_reference_tables_are_priced() -> None:
    """15,000 table.set/get pairs on an anyref table (120 KB) compiled for 7.6 s; funcref
    tables need no barrier and cost nothing extra."""
    pairs = ("(table.set $t (i32.const 0) (table.get $t (i32.const 1))) " * 15_000)
    anyref = wasm(f'(module (table $t 10 anyref) (func {pairs}))')
    funcref = wasm(f'(module (table $t 10 funcref) (func {pairs}))')
    assert compile_cost(code_shape(anyref), code_work(anyref)) > 5.0
    assert code_work(funcref)[0][0] == 0


def test_an_empty_code_section_is_read() -> None:
    """Valid, no types, no bodies: the guard crashed on it (TypeError) and every run of
    it died with a traceback."""
    data = b"\0asm\x01\0\0\0\x0a\x01\x00"
    wasmtime.Module.validate(wasmtime.Engine(), data)
    assert code_work(data) == []
    CompileGuard.for_limits(short_policy().limits).check_code(data, "empty.wasm")


def test_a_module_over_budget_by_its_shape_is_refused_before_decoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape alone is a lower bound of the cost: decoding a large module's code (seconds
    of Python) waits until the shape is within the budget."""
    import stockade.engine.guard as guard_module

    def decode(data: bytes) -> list[Work]:
        raise AssertionError("decoded a module its shape already refuses")

    monkeypatch.setattr(guard_module, "code_work", decode)
    body = "(drop (i32.add (local.get 0) (local.get 0))) " * 2000
    big = wasm("(module " + f"(func (param i32) {body})" * 1000 + ")")
    with pytest.raises(ModuleError, match="compil"):
        CompileGuard.for_limits(short_policy().limits).check_code(big, "big.wasm")


def test_allocation_in_element_segments_is_priced() -> None:
    """The same allocation as the global initialisers', in element expressions (20 KB):
    13 s and 1 GB to compile."""
    items = " ".join(["(item (struct.new_default $s))"] * 100)
    data = wasm('(module (type $s (struct ' + "(field v128) " * 10_000 + ")) "
                f"(table 100 (ref null $s)) (elem (table 0) (i32.const 0) (ref null $s) {items}) "
                '(func (export "_start")))')
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), data)
    # The initialisers, after the function.
    assert 100 * 10_000 in [units for units, _, _ in code_work(data)]
    with pytest.raises(ModuleError, match="compil"):
        CompileGuard.for_limits(short_policy().limits).check_code(data, "bomb.wasm")


def test_a_tripwire_load_decodes_the_code_once(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """The guard checks the module as given and rewritten; the probes do no code work, so
    the second check reuses the first's (decoding CPython takes over a second). Counted
    in this process: compiling in place, as a worker does (the child runs the same
    `checked_code`)."""
    import stockade.engine.compiler as compiler_module
    import stockade.engine.guard as guard_module

    monkeypatch.setattr(compiler_module, "_in_child", False)
    calls: list[int] = []

    def counted(data: bytes) -> list[Work]:
        calls.append(len(data))
        return code_work(data)

    monkeypatch.setattr(guard_module, "code_work", counted)
    path = tmp_path / "fresh.wasm"  # never in the AoT cache: a custom section of its own
    nonce = os.urandom(8)
    path.write_bytes(heavy_sites_bomb(TABLE_COPY, 300) + b"\x00\x0a\x01x" + nonce)
    loaded = Sandbox(Policy.from_profile("default")).load(path)
    assert loaded.tripwire and len(calls) == 1


# -- found by a second review ----------------------------------------------------------

SECOND_REVIEW = {
    # 30,000 br_on_null carrying an i32 into one result block (240 KB): 31 s.
    "br_on_null": '(module (func (export "_start") (param externref) (result i32) '
                  '(block (result i32) '
                  + "(drop (drop (br_on_null 0 (i32.const 0) (local.get 0)))) " * 30_000
                  + "(i32.const 1))))",
    # 55,000 catch clauses branching with a value out of their try_table (495 KB): 35 s.
    "try_table catch": '(module (tag $t (param i32)) (func $f) (func (export "_start") '
                       '(result i32) (block (result i32) '
                       + "(try_table (catch $t 1) (call $f)) " * 55_000 + "(i32.const 0))))",
    # 60,000 ref.test against a concrete subtype (360 KB): 58 s and 1.6 GiB.
    "ref.test": '(module (type $s (sub (struct (field i32)))) '
                '(type $t (sub $s (struct (field i32) (field i64)))) '
                '(func (export "_start") (param anyref) '
                + "(drop (ref.test (ref $t) (local.get 0))) " * 60_000 + "))",
    # 25,000 try_tables with results (200 KB): 2.5 GiB (60,000 aborted the process).
    "try_table results": '(module (func $g (param i32)) (func (export "_start") (param i32) '
                         + "(call $g (try_table (result i32) (local.get 0))) " * 25_000
                         + "))",
}


@pytest.mark.parametrize("name", list(SECOND_REVIEW))
def test_second_review_bombs_are_refused(name: str) -> None:
    data = wasm(SECOND_REVIEW[name])
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), data)
    with pytest.raises(ModuleError, match="compil"):
        CompileGuard.for_limits(short_policy().limits).check_code(data, "bomb.wasm")


@pytest.mark.parametrize("text", [
    "(drop (array.new_default $s (i32.const 1)))",
    "(drop (array.new_fixed $s 0))",
])
def test_an_array_instruction_naming_an_empty_struct_is_no_crash(text: str) -> None:
    """Invalid (wasmtime's to refuse): the guard raised IndexError, a traceback from every
    run of it."""
    data = wasm(f'(module (type $s (struct)) (func (export "_start") {text}))')
    CompileGuard.for_limits(short_policy().limits).check_code(data, "x.wasm")
    with pytest.raises(ModuleError, match="invalid WebAssembly"):
        Sandbox(short_policy()).load(data)


def _results(count: int) -> str:
    return " ".join(["i32"] * count)


def value_pairs_bomb(arity: int, pairs: int) -> bytes:
    """`call $p` leaves `arity` results, `call $c` takes them all: `arity` * 2 values moved
    per five bytes. 800 pairs of 1,000 (5 KB) compiled for 18.6 s and 800 MB."""
    return wasm(f'(module (func $p (result {_results(arity)}) unreachable) '
                f'(func $c (param {_results(arity)})) '
                f'(func (export "_start") {" ".join(["call $p call $c"] * pairs)}))')


@pytest.mark.parametrize("module", [
    pytest.param(lambda: value_pairs_bomb(1000, 800), id="call"),
    pytest.param(lambda: wasm(
        f'(module (type $w (func (result {_results(1000)}))) (func $p (type $w) unreachable) '
        f'(func $c (param {_results(1000)})) (table 1 funcref) (elem (i32.const 0) $p) '
        '(func (export "_start") '
        + "(call_indirect (type $w) (i32.const 0)) call $c " * 800 + "))"),
        id="call_indirect"),
    pytest.param(lambda: wasm(
        f'(module (type $w (func (result {_results(1000)}))) (func $p (type $w) unreachable) '
        f'(func $c (param {_results(1000)})) (elem declare func $p) (func (export "_start") '
        + "(call_ref $w (ref.func $p)) call $c " * 800 + "))"),
        id="call_ref"),
    pytest.param(lambda: wasm(
        f'(module (func $p (result {_results(1000)}) unreachable) '
        f'(func $c (param {_results(1000)})) (func (export "_start") '
        + f"(block $b (result {_results(1000)}) call $p br $b) call $c " * 400 + "))"),
        id="branch"),
])
def test_calls_and_branches_moving_many_values_are_refused(module: object,
                                                           tmp_path: Path) -> None:
    """A few bytes that move a thousand values: the guard charged their bytes only (a 5 KB
    body, predicted 0.01 s) and let them compile for 6-20 s under any timeout."""
    refused_on_load(module(), tmp_path)  # type: ignore[operator]


def test_values_moved_are_counted_per_instruction() -> None:
    """Calls (parameters and results, by function, type or reference), throws (the tag's
    parameters), typed blocks (parameters and results) and branches (what their target
    takes: a block's results, a loop's parameters)."""
    data = wasm('(module (type $two (func (param i32 i64) (result f32))) '
                '(import "m" "f" (func $f (type $two))) (tag $t (param i32 i32 i32)) '
                '(table 1 funcref) (elem declare func $g) '
                '(func $g (type $two) f32.const 0) '
                '(func (type $two) '
                '  (drop (call $f (local.get 0) (local.get 1))) '
                '  (drop (call_indirect (type $two) (local.get 0) (local.get 1) (i32.const 0))) '
                '  (drop (call_ref $two (local.get 0) (local.get 1) (ref.func $g))) '
                '  (drop (block (type $two) (param i32 i64) (result f32) '
                '    (br 0 (f32.const 1)))) '
                '  (loop $l (type $two) (param i32 i64) (result f32) '
                '    (br_if $l (local.get 0) (local.get 1) (local.get 0)) drop drop '
                '    f32.const 0) drop '
                '  (throw $t (i32.const 0) (i32.const 0) (i32.const 0))))')
    moved = [values for _, _, values in code_work(data)]
    # $g: nothing (its implicit return is not counted); the last: 3 calls of 3, the block
    # 3 and its branch 1, the loop 3 and its branch 2, the throw 3; then the trampolines
    # of the function types ($two; the tag's) and of $g, which escapes.
    trampoline = TRAMPOLINE_BASE + 2 * TRAMPOLINE_PARAM + TRAMPOLINE_RESULT
    tag_type = TRAMPOLINE_BASE + 3 * TRAMPOLINE_PARAM
    assert moved == [0, 3 * 3 + 3 + 1 + 3 + 2 + 3, trampoline, tag_type, trampoline]


def test_ordinary_calls_add_little() -> None:
    """A C program (libc included): what its calls move adds next to nothing."""
    data = guest("hello.wasm").read_bytes()
    work = code_work(data)
    assert sum(values for _, _, values in work) > 0
    assert compile_cost(code_shape(data), work) - compile_cost(code_shape(data)) < 0.1


# -- found by a third review -----------------------------------------------------------

def catch_clauses_bomb(clauses: int, calls: int, catch_all: str = "") -> bytes:
    """`calls` calls inside a try_table of `clauses` tag-specific catch clauses: each call
    is an edge to every clause. 100 clauses around 1,000 calls (3 KB, values moved: none)
    compiled for 14 s, around 2,000 for 57 s."""
    tags = " ".join(f"(tag $t{i})" for i in range(clauses))
    catches = " ".join(f"(catch $t{i} $out)" for i in range(clauses))
    return wasm(f'(module {tags} (func $f) (func (export "_start") (block $out '
                f'(try_table {catches} {catch_all} {"call $f " * calls}))))')


def escaping_bomb(functions: int, arity: int, how: str) -> bytes:
    """`functions` functions of `arity` parameters and results that the host may call: a
    trampoline each. 1,000 of 1,000 and 1,000 (16 KB) compiled for 35 s."""
    values = " ".join(["i64"] * arity)
    defined = "".join(f"(func $f{i} (type $t) unreachable)" for i in range(functions))
    escape = ("(elem declare func " + " ".join(f"$f{i}" for i in range(functions)) + ")"
              if how == "elem" else
              "".join(f'(export "{i}" (func $f{i}))' for i in range(functions)))
    return wasm(f"(module (type $t (func (param {values}) (result {values}))) {defined} "
                f"{escape})")


def function_types_bomb(types: int, arity: int) -> bytes:
    """`types` distinct function types and no function: wasmtime compiles a trampoline
    for each all the same. 1,000 of 1,000 parameters and 1,000 results (2 MB) compiled
    for 38 s; the guard charged only the types of imported functions, none here."""
    text = ["(module"]
    for i in range(types):
        params = " ".join("i32" if j == i % arity else "i64" for j in range(arity))
        text.append(f'(type (func (param {params}) (result {" ".join(["i64"] * arity)})))')
    return wasm(" ".join(text) + ")")


def imported_types_bomb(types: int, arity: int) -> bytes:
    """`types` imported functions of distinct types: a trampoline each. 300 of 1,000
    parameters and 1,000 results (606 KB, no code) compiled for 11 s."""
    text = ["(module"]
    for i in range(types):
        # Distinct types: the i-th parameter is an i32, the rest i64.
        params = " ".join("i32" if j == i % arity else "i64" for j in range(arity))
        text.append(f'(import "m" "f{i}" (func (param {params}) '
                    f'(result {" ".join(["i64"] * arity)})))')
    return wasm(" ".join(text) + ")")


@pytest.mark.parametrize("module", [
    pytest.param(lambda: catch_clauses_bomb(100, 1500), id="catch clauses"),
    pytest.param(lambda: escaping_bomb(600, 1000, "elem"), id="escaping (elem)"),
    pytest.param(lambda: escaping_bomb(450, 1000, "export"), id="escaping (export)"),
    pytest.param(lambda: imported_types_bomb(450, 1000), id="imported types"),
    pytest.param(lambda: function_types_bomb(450, 1000), id="unused function types"),
])
def test_third_review_bombs_are_refused(module: object, tmp_path: Path) -> None:
    """Calls that reach many catch clauses, and trampolines of wide types: the guard
    predicted 0.005-0.08 s for modules that compiled for 11-57 s."""
    refused_on_load(module(), tmp_path)  # type: ignore[operator]


def test_catch_clauses_count_up_to_the_first_catch_all() -> None:
    """A call reaches the tag-specific clauses of every try_table around it, up to the
    first catch-all (which catches everything the ones outside it would): 100 clauses
    before a catch_all around 1,000 calls compile as slowly as without it (14 s), and
    cheaply (0.15 s) when the catch_all comes first."""
    def sites(data: bytes) -> float:
        return code_work(data)[1][1]

    edges = 100 * 1000 * HANDLER_WEIGHT
    assert sites(catch_clauses_bomb(100, 1000)) == pytest.approx(edges)
    assert sites(catch_clauses_bomb(100, 1000, "(catch_all $out)")) == pytest.approx(edges)
    first = wasm('(module (tag $t) (func $f) (func (export "_start") (block $out '
                 '(try_table (catch_all $out) (catch $t $out) ' + "call $f " * 1000 + '))))')
    assert sites(first) == 0
    # Nested: the inner try_table's clauses add to the outer's, unless it catches all.
    nested = wasm('(module (tag $t) (tag $u) (func $f) (func (export "_start") (block $out '
                  '(try_table (catch $t $out) (try_table (catch $u $out) call $f) '
                  '(try_table (catch $u $out) (catch_all $out) call $f) call $f))))')
    assert sites(nested) == pytest.approx((2 + 1 + 1) * HANDLER_WEIGHT)


def test_trampolines_are_counted_for_what_escapes() -> None:
    """One per escaping defined function (exported, in an element segment, a ref.func
    in a global's initialiser), one per function type; none for a defined function the
    host cannot reach."""
    data = wasm('(module (type $t (func (param i32) (result i32))) '
                '(import "m" "a" (func (type $t))) (import "m" "b" (func (type $t))) '
                '(func $exported (type $t) local.get 0) (func $listed (type $t) local.get 0) '
                '(func $global (type $t) local.get 0) (func $hidden (type $t) local.get 0) '
                '(export "e" (func $exported)) (elem declare func $listed) '
                '(global funcref (ref.func $global)))')
    trampoline = TRAMPOLINE_BASE + TRAMPOLINE_PARAM + TRAMPOLINE_RESULT
    work = code_work(data)
    assert [values for _, _, values in work[4:]] == [trampoline] * 4  # $t; three defined


def test_an_invalid_module_is_refused_before_the_guard_reads_it(tmp_path: Path) -> None:
    """The guard's scan reads only modules wasmtime validated: 8M struct types (30 MiB,
    past wasmtime's 1M) cost the scan 20 s and 680 MB before wasmtime refused them."""
    types = 1_100_000
    entry = b"\x5f\x01\x7f\x00"  # struct (field i32)
    section = encode_leb(types) + entry * types
    data = b"\0asm\x01\0\0\0" + b"\x01" + encode_leb(len(section)) + section
    path = tmp_path / "types.wasm"
    path.write_bytes(data)
    with pytest.raises(ModuleError, match="invalid WebAssembly"):
        Sandbox(short_policy()).load(path)
    assert code_work(data) == []  # and the scan stops at wasmtime's limit by itself


def test_a_padded_sub_opcode_does_not_hide_a_branch() -> None:
    """`br_on_cast`'s label was read three bytes after the prefix: a sub-opcode written in
    two bytes (valid LEB128) made the guard read its flags as the label."""
    data = wasm('(module (type $s (sub (struct))) (func (export "_start") (param anyref) '
                '(drop (block (result anyref) (drop (br_on_cast 0 anyref (ref null $s) '
                '(local.get 0))) (ref.null any)))))')
    at = data.index(b"\xfb\x18")
    code = data.rindex(b"\x0a", 0, at)  # section id, size, one body, its size: one byte each
    padded = (data[:code] + bytes([0x0A, data[code + 1] + 1, 1, data[code + 3] + 1])
              + data[code + 4:at] + b"\xfb\x98\x00" + data[at + 2:])
    wasmtime.Module.validate(wasmtime.Engine(Sandbox(short_policy()).engine_config
                                             .to_wasmtime()), padded)
    assert code_work(padded) == code_work(data)


def stack_live_bomb(values: int, blocks: int) -> bytes:
    """`values` loads left on the operand stack across `blocks` `if`s, summed after them:
    no locals, so neither `max_locals` nor the per-local term sees them. 2,000 across
    20,000 (214 KB) compiled for 23 s; 6,000 for 58 s."""
    loads = "".join(f"(i64.load offset={8 * i} (i32.const 0)) " for i in range(values))
    ifs = "(if (i32.load (i32.const 0)) (then (call $f))) " * blocks
    return wasm(f'(module (memory 1) (func $f) (func (export "_start") (result i64) '
                f'{loads}{ifs}{"i64.add " * (values - 1)}))')


def test_values_left_on_the_stack_across_blocks_are_refused(tmp_path: Path) -> None:
    refused_on_load(stack_live_bomb(2000, 20_000), tmp_path)


def test_the_stack_under_each_block_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What lies under a block, an `if` (past its condition) or a loop lives across it:
    charged `LIVE_VALUE` values moved each; calls, stores and branches move the height
    as their types say, and the code after a branch is unreachable."""
    assert 0 < LIVE_VALUE < 1

    def live(body: str) -> float:
        data = wasm('(module (memory 1) (func $two (param i32 i32) (result i32) '
                    f'local.get 0) (func (export "_start") (result i32) {body}))')
        monkeypatch.setattr(codework, "LIVE_VALUE", 1000)
        counted = code_work(data)[1][2]
        monkeypatch.setattr(codework, "LIVE_VALUE", 0)
        return (counted - code_work(data)[1][2]) / 1000

    assert live("(i32.const 0)") == 0
    # Three values under a block, three under an if (its condition taken): 6.
    assert live("i32.const 1 i32.const 2 i32.const 3 (block) (if (i32.const 1) (then)) "
                "drop drop") == 6
    # A call takes two and leaves one: one value under the loop.
    assert live("i32.const 1 i32.const 2 call $two (loop) ") == 1
    # A store takes two: nothing under the block.
    assert live("(i32.store (i32.const 0) (i32.const 1)) (block) i32.const 0") \
        == 0
    # After `unreachable` the block's stack is as it began.
    assert live("(block (result i32) i32.const 1 i32.const 2 unreachable) (block) ") \
        == 1

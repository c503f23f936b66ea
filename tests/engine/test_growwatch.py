"""The rewriting that watches `memory.grow`: modules keep their behaviour and indices, and
the host reads the largest size a refused grow asked for."""

from __future__ import annotations

import pytest
import wasmtime

from stockade.engine.grow import EXPORT, refused_bytes
from stockade.engine.growwatch import watch

MiB = 1024**2


def engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_gc = config.wasm_memory64 = config.wasm_multi_memory = True
    return wasmtime.Engine(config)


def run(wat: str, limit: int = 16 * MiB) -> tuple[list[int], int]:
    """The watched module's run: what it logged (`host.log`; `host.g` is the global 1)
    and the bytes its largest refused grow asked for."""
    data = watch(bytes(wasmtime.wat2wasm(wat)))
    eng = engine()
    store = wasmtime.Store(eng)
    store.set_limits(memory_size=limit)
    log: list[int] = []
    linker = wasmtime.Linker(eng)
    linker.define_func("host", "log", wasmtime.FuncType([wasmtime.ValType.i64()], []),
                       log.append)
    linker.define(store, "host", "g",
                  wasmtime.Global(store, wasmtime.GlobalType(wasmtime.ValType.i64(), False),
                                  wasmtime.Val.i64(1)))
    exports = linker.instantiate(store, wasmtime.Module(eng, data)).exports(store)
    start = exports["_start"]
    assert isinstance(start, wasmtime.Func)
    start(store)
    grown = exports[EXPORT]
    assert isinstance(grown, wasmtime.Global)
    return log, refused_bytes(grown.value(store))


LOG = '(import "host" "log" (func $log (param i64)))'


def test_grows_return_what_they_did_and_the_refused_size_is_kept() -> None:
    log, refused = run(f"""(module {LOG} (memory 1)
      (func (export "_start")
        (call $log (i64.extend_i32_s (memory.grow (i32.const 2))))
        (call $log (i64.extend_i32_s (memory.grow (i32.const 16384))))
        (call $log (i64.extend_i32_s (memory.grow (i32.const 300))))
        (call $log (i64.extend_i32_s (memory.size)))))""")
    assert log == [1, -1, -1, 3]
    assert refused == (3 + 16384) * 65536  # the largest asked, not the last


def test_nothing_refused_reads_zero() -> None:
    assert run(f'(module {LOG} (memory 1) (func (export "_start") '
               '(drop (memory.grow (i32.const 1)))))') == ([], 0)


def test_a_64_bit_memory_and_a_second_memory() -> None:
    log, refused = run(f"""(module {LOG} (memory i64 1) (memory $b 1)
      (func (export "_start")
        (call $log (memory.grow (i64.const -1)))
        (call $log (i64.extend_i32_s (memory.grow $b (i32.const 1))))))""")
    assert log == [-1, 1]
    assert refused > 2**50  # -1 pages asked: past any limit, the sum does not wrap


def test_indices_of_everything_the_module_had_stay() -> None:
    # Imported and defined functions and globals, a table of functions, a start function
    # and GC types in a rec group: the added type, functions and global come after them.
    log, refused = run(f"""(module {LOG}
      (import "host" "g" (global $g i64))
      (type $s (struct (field i32)))
      (rec (type $f (func (result i64))) (type $a (array i8)))
      (memory 1)
      (global $mine (mut i64) (i64.const 7))
      (table 2 funcref) (elem (i32.const 0) $seven $grow)
      (func $seven (type $f) (global.get $mine))
      (func $grow (type $f) (i64.extend_i32_s (memory.grow (i32.const 70000))))
      (func $begin (global.set $mine (i64.add (global.get $mine) (global.get $g))))
      (start $begin)
      (func (export "_start")
        (call $log (call_indirect (type $f) (i32.const 0)))
        (call $log (call_indirect (type $f) (i32.const 1)))))""")
    assert log == [8, -1]
    assert refused == 70001 * 65536


@pytest.mark.parametrize("wat", [
    '(module (memory 1) (func (export "_start")))',  # no grow: nothing to watch
    '(module (func (export "_start")))',  # no memory
    f'(module (memory 1) (global (export "{EXPORT}") i32 (i32.const 0)) '
    '(func (export "_start") (drop (memory.grow (i32.const 1)))))',  # the name is taken
], ids=["no grow", "no memory", "reserved name"])
def test_modules_left_as_they_are(wat: str) -> None:
    data = bytes(wasmtime.wat2wasm(wat))
    assert watch(data) is data


def test_custom_sections_and_names_survive() -> None:
    data = bytes(wasmtime.wat2wasm('(module $named (memory 1) (func $f (export "_start") '
                                   '(drop (memory.grow (i32.const 1)))))'))
    watched = watch(data)
    assert watched != data and b"\x04name" in watched
    wasmtime.Module.validate(engine(), watched)

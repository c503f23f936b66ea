"""Attacks on the tripwire deadline (`stockade.engine.tripwire`): hostile guests under
`Sandbox(Policy.from_profile("default").with_limits(timeout=0.5))`, each in a child process
bounded in time, so a guest the tripwire misses fails the test instead of hanging it.

Bulk instructions: a bulk instruction (memory.fill/copy/init, table.fill/copy/init,
array.fill/copy/new...) is one instruction, but a function body can hold tens of thousands
of them in straight line, and a return passes no function entry, so a recursion entered
before the deadline re-runs a body's worth of them in every frame as it unwinds. Probed at
entries and loop headers only, such guests ran for seconds past the deadline and were
reported `exited` (straight-line memory.fill, 4000 x 64 MiB: epochs `timeout` at 0.8 s,
tripwire `exited 0` after 7.1 s); the rewriting now probes after every call and bulk
instruction. The other attacks (padded LEB128 immediates, SIMD immediates holding a `loop`
byte, loops made of tail calls or exception handlers, shared-memory waits, opcodes the
rewriting does not know) held and stay as regression tests.
"""

from __future__ import annotations

import pytest
import wasmtime

from stockade.engine import tripwire

from .hostile import assert_stopped, run_hostile

# -- bulk instructions in straight line, and after returns ----- ------------------------

def _straight(instruction: str, count: int, prelude: str = "", locals_: str = "") -> str:
    body = "\n".join(instruction for _ in range(count))
    return (f'(module (memory (export "memory") 1024) {prelude}\n'
            f'  (func (export "_start") {locals_} {body}))')


MEMORY_FILL = _straight("(memory.fill (i32.const 0) (i32.const 7) (i32.const 67108864))", 2000)
MEMORY_COPY = _straight(
    "(memory.copy (i32.const 0) (i32.const 33554432) (i32.const 33554432))", 2000)
# Table fills in straight line cost compile time with the square of their number (the
# compile guard refuses 30,000), so these run in every frame of a recursion as it unwinds.
_FILL = "(table.fill (i32.const 0) (ref.null func) (i32.const 100000))"
TABLE_FILL = f"""
(module
  (memory (export "memory") 1) (table 100000 funcref)
  (func $f (param $n i32)
    (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))
    {" ".join([_FILL] * 16)})
  (func (export "_start") (call $f (i32.const 4000))))
"""
ARRAY_FILL = _straight(
    "(array.fill $a (local.get $x) (i32.const 0) (i64.const 7) (i32.const 8000000))", 1500,
    prelude="(type $a (array (mut i64)))",
    locals_="(local $x (ref null $a)) (local.set $x (array.new_default $a (i32.const 8000000)))")
# The amplifier: calls go down (each past a probe) before the deadline; every frame then
# runs its fills after its callee returns, and a return passes no probe. 2000 frames x 4
# fills ran 14.3 s here; the depth (stack) and the body (max_function_size) bound it only
# at hours.
UNWIND = """
(module
  (memory (export "memory") 1024)
  (func $f (param $n i32)
    (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 67108864))
    (memory.fill (i32.const 0) (i32.const 2) (i32.const 67108864))
    (memory.fill (i32.const 0) (i32.const 3) (i32.const 67108864))
    (memory.fill (i32.const 0) (i32.const 4) (i32.const 67108864)))
  (func (export "_start") (call $f (i32.const 1000))))
"""


@pytest.mark.parametrize("source", [MEMORY_FILL, MEMORY_COPY, TABLE_FILL, ARRAY_FILL, UNWIND],
                         ids=["memory.fill", "memory.copy", "table.fill", "array.fill",
                              "unwind"])
@pytest.mark.parametrize("backend", ["sandbox", "capi"])
def test_bulk_instructions_do_not_outrun_the_tripwire(source: str, backend: str) -> None:
    """Ran for seconds past a 0.5 s timeout, reported `exited`, when probes were only at
    entries and loop headers. The C API's runs arm the same page in C."""
    run = run_hostile(source, backend=backend)
    assert run["tripwire"] is True and run["backend"] == backend, run
    assert_stopped(run)


def test_the_epochs_engine_stops_the_same_straight_line_fills() -> None:
    """The reference the tripwire regressed from: epochs stop these at the deadline."""
    assert_stopped(run_hostile(MEMORY_FILL, epochs=True))


# -- held: attacks the tripwire stopped --------------------------------------------------

TAIL_SELF = """
(module (memory (export "memory") 1)
  (func $f (param i32) (return_call $f (i32.add (local.get 0) (i32.const 1))))
  (func (export "_start") (call $f (i32.const 0))))
"""
TAIL_MUTUAL_INDIRECT = """
(module (memory (export "memory") 1)
  (type $t (func (param i32)))
  (table 2 funcref) (elem (i32.const 0) $a $b)
  (func $a (type $t) (return_call_indirect (type $t) (local.get 0) (i32.const 1)))
  (func $b (type $t) (return_call_indirect (type $t) (local.get 0) (i32.const 0)))
  (func (export "_start") (call $a (i32.const 0))))
"""
TRY_TABLE_LOOP = """
(module (memory (export "memory") 1) (tag $e)
  (func (export "_start") (loop $l (try_table (catch_all $l) (throw $e)))))
"""
SIMD_THEN_LOOP = """
(module (memory (export "memory") 1)
  (func (export "_start")
    (drop (i8x16.shuffle 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3
            (v128.const i8x16 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3) (v128.const i64x2 3 3)))
    (drop (i8x16.extract_lane_u 3 (v128.const i64x2 0 0)))
    (drop (i32.load offset=3 align=1 (i32.const 0)))
    (loop $l (br $l))))
"""


def _padded_loop() -> bytes:
    """A loop whose block type is a type index in a padded 5-byte LEB, after an i32.const
    in a padded LEB whose bytes hold 0x03 (the `loop` opcode), with `br` padded too."""
    types = b"\x02\x60\x00\x00\x60\x01\x7f\x00"  # 0: () -> (), 1: (i32) -> ()
    body = (b"\x00"                                   # no locals
            + b"\x41\x83\x80\x80\x80\x00"             # i32.const 3 (padded)
            + b"\x03\x81\x80\x80\x80\x00"             # loop (type 1) (padded)
            + b"\x0c\x80\x80\x80\x80\x00"             # br 0 (padded)
            + b"\x0b\x0b")
    code = b"\x01" + bytes([len(body)]) + body
    return (b"\0asm\x01\0\0\0"
            + b"\x01" + bytes([len(types)]) + types
            + b"\x03\x02\x01\x00"
            + b"\x05\x03\x01\x00\x01"
            + b"\x07\x13\x02\x06memory\x02\x00\x06_start\x00\x00"
            + b"\x0a" + bytes([len(code)]) + code)


@pytest.mark.parametrize("source", [TAIL_SELF, TAIL_MUTUAL_INDIRECT, TRY_TABLE_LOOP,
                                    SIMD_THEN_LOOP, _padded_loop()],
                         ids=["return_call", "return_call_indirect", "try_table",
                              "simd-immediates", "padded-leb"])
@pytest.mark.parametrize("backend", ["sandbox", "capi"])
def test_held_guests_are_stopped(source: str | bytes, backend: str) -> None:
    run = run_hostile(source, backend=backend, bound=30.0)
    assert run["tripwire"] is True and run["backend"] == backend, run
    assert_stopped(run)


def test_held_padded_encodings_get_every_probe() -> None:
    rewritten = tripwire.instrument(_padded_loop())
    wasmtime.Module.validate(wasmtime.Engine(), rewritten)
    probe = b"\x41\x00\xfe\x12\x40\x01\x00\x1a"  # memory 1: the tripwire's
    assert rewritten.count(probe) == 2  # function entry and the loop


def test_held_shared_memory_wait_is_refused() -> None:
    """memory.atomic.wait32 with no timeout would block in the host past any deadline:
    the engine has no shared memory, so the module does not instantiate."""
    run = run_hostile("""(module (memory (export "memory") 1 1 shared)
      (func (export "_start")
        (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))""",
               bound=30.0)
    assert run["outcome"] == "denied" and "shared memory" in str(run["message"]), run


@pytest.mark.parametrize("backend", ["sandbox", "capi"])
def test_held_code_the_rewriting_does_not_know_runs_on_epochs(backend: str) -> None:
    """wide-arithmetic (0xfc 19..22) is valid here but unknown to the decoder: the module
    goes to the epochs twin, which stops its loop (from the C API's sandbox too: it hands
    the module to `Sandbox`)."""
    run = run_hostile("""(module (memory (export "memory") 1)
      (func (export "_start") (local i64)
        (loop $l
          (i64.add128 (local.get 0) (local.get 0) (local.get 0) (local.get 0))
          drop local.set 0 (br $l))))""", backend=backend, bound=30.0)
    assert run["tripwire"] is False and run["backend"] == "sandbox", run
    assert_stopped(run)

"""Attacks on the tripwire deadline (`stockade.engine.tripwire`) past its probes after calls
and bulk instructions: hostile guests under
`Sandbox(Policy.from_profile("default").with_limits(timeout=0.5))`, each in a child process
bounded in time, so a guest the tripwire misses fails the test instead of hanging it.

* Exception unwinding resumes a frame at a `try_table` catch label (a block's end), not
  after its call. With no probe there (now: after every `end` of a body that catches), a
  recursion entered before the deadline whose every frame
  catches, runs a body of straight-line code and rethrows runs depth x body past the
  deadline and is reported `exited` (7000 frames x 45000 i64.div_u: 1.4 s against 0.5 s;
  the same guest with returns is stopped at 0.51 s). Epochs do not stop it either.
* `struct.new_default` of a 10,000-field struct: Cranelift inlines every field's
  initialisation, so a 130 KB module (100 such instructions) compiles for ~16 s (10 of
  them 0.5 s: superlinear), on both engines; the compile guard's body-size limit did not
  see it (now: it counts GC work, `codework`).
* The rewriting grows code up to 5x (a 2-byte `call` gets an 8-byte probe): a module
  whose body is valid as given can be invalid rewritten (over wasmparser's 7,654,321-byte
  body limit) and was refused instead of falling back to the epochs twin (now: a rewritten
  module wasmtime or the compile guard refuses compiles as given, with epochs).

The other attacks held and stay as regression tests.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

from stockade import ModuleError, Policy, Sandbox
from stockade.binary import CODE, sections
from stockade.engine import EngineConfig, tripwire
from stockade.engine.trip import Tripwire

from .hostile import GRACE, ROOT, TIMEOUT, assert_stopped, run_hostile

PROBE = b"\x41\x00\xfe\x12\x40\x01\x00\x1a"  # memory 1: the tripwire's, for one-memory guests


# -- exception unwinding resumes frames past no probe ---- -----------------------------

def _unwind(depth: int, work: str, *, throw: bool) -> str:
    """Recurse `depth` deep (each call past a probe, before the deadline); then every frame,
    on its way back, runs `work` and goes on unwinding, by `throw` (caught at a block's
    end, rethrown) or by returning (after a call: probed)."""
    if throw:
        descend = """(block $h (try_table (catch_all $h)
            (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1))))
                (else (throw $e)))))"""
        leave = "(throw $e)"
        top = "(block $top (try_table (catch_all $top) (call $f (i32.const {d}))))"
    else:
        descend = "(if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))"
        leave = ""
        top = "(call $f (i32.const {d}))"
    return f"""
(module (memory (export "memory") 1024) (tag $e)
  (func $f (param $n i32) (local $x i64)
    (local.set $x (i64.const -1)) (i64.store (i32.const 8) (i64.const 1))
    {descend}
    {work}
    (i64.store (i32.const 16) (local.get $x))
    {leave})
  (func (export "_start") {top.format(d=depth)}))
"""


# A divisor loaded from memory (it could be 0, so Cranelift keeps every division).
DIVS = " ".join(["(local.set $x (i64.div_u (local.get $x) (i64.load (i32.const 8))))"] * 45000)
THROW_UNWIND = _unwind(7000, DIVS, throw=True)
RETURN_UNWIND = _unwind(7000, DIVS, throw=False)


def test_exception_unwinding_meets_a_probe() -> None:
    """Was: 7000 frames each catch, divide 45000 times, rethrow: exited 0 after 1.4 s
    against a 0.5 s timeout (the probe after a call never runs: the frame resumes at its
    catch label). Fix: probe after the `end` of every block a `try_table` catch clause
    targets (or after every `end` of a block inside a function that has a try_table)."""
    run = run_hostile(THROW_UNWIND)
    assert run["tripwire"] is True, run
    assert_stopped(run)


def test_held_the_same_unwinding_by_returns_is_stopped() -> None:
    """The control: returns resume after the call, where the probe is (epochs run this one
    to the end: 2.4 s, exited)."""
    run = run_hostile(RETURN_UNWIND)
    assert run["tripwire"] is True, run
    assert_stopped(run)


def test_held_bulk_work_in_catch_handlers_is_stopped() -> None:
    """Each frame of the throwing unwind fills 64 MiB in its handler: the probe after the
    bulk instruction stops it."""
    fills = " ".join(["(memory.fill (i32.const 0) (i32.const 7) (i32.const 67108864))"] * 4)
    run = run_hostile(_unwind(1000, fills, throw=True))
    assert run["tripwire"] is True, run
    assert_stopped(run)


def test_held_local_throw_catch_in_straight_line_is_cheap() -> None:
    """20,000 throw/catch pairs in one frame, no loop, no call: each throw is a libcall,
    but the whole body runs in ~10 ms."""
    pair = "(block $h (try_table (catch_all $h) (throw $e)))"
    run = run_hostile(f'(module (memory (export "memory") 1) (tag $e) (func (export "_start") '
               f'{" ".join([pair] * 20000)}))', bound=60.0)
    assert run["outcome"] == "exited" and float(str(run["seconds"])) < TIMEOUT, run


# -- a compile-time bomb the compile guard did not see ---- ----------------------------

def _struct_bomb(fields: int, count: int) -> str:
    return (f'(module (memory (export "memory") 1) '
            f'(type $s (struct {" ".join(["(field v128)"] * fields)})) '
            f'(func (export "_start") {" ".join(["(drop (struct.new_default $s))"] * count)}))')


def test_struct_new_default_of_a_wide_struct_compiles_for_seconds() -> None:
    """Was (both engines, not the tripwire's): 100 `struct.new_default` of a 10,000-field
    struct, a 130 KB module, compiled for ~16 s (epochs engine: 11 s). The compile guard
    now counts the fields each allocation initialises (`codework`); see
    tests/engine/test_guard_work.py."""
    policy = Policy.from_profile("default").with_limits(timeout=TIMEOUT, wasm_gc=True)
    module = bytes(wasmtime.wat2wasm(_struct_bomb(10_000, 100)))
    for config in (None, EngineConfig.for_limits(policy.limits, tripwire=False)):
        with Sandbox(policy, engine_config=config) as sandbox, \
                pytest.raises(ModuleError, match="compil"):
            sandbox.load(module)


# -- the rewriting's growth makes a valid module invalid ---- ---------------------------

def _calls_body(count: int) -> bytes:
    """A module whose one function (type () -> ()) calls itself `count` times in a row."""
    body = b"\x00" + b"\x10\x00" * count + b"\x0b"
    size = len(body)
    from stockade.binary import encode_leb

    code_entry = encode_leb(size) + body
    code = b"\x01" + code_entry
    return (b"\0asm\x01\0\0\0"
            + b"\x01\x04\x01\x60\x00\x00"
            + b"\x03\x02\x01\x00"
            + b"\x05\x03\x01\x00\x01"
            + b"\x07\x13\x02\x06memory\x02\x00\x06_start\x00\x00"
            + b"\x0a" + encode_leb(len(code)) + code)


def test_rewritten_code_past_what_wasmtime_accepts_runs_on_epochs() -> None:
    """Availability: 1.6 MB of `call 0` is valid; the rewritten body is 8 MB, over
    wasmparser's function size limit, and the loader reports `invalid WebAssembly`
    instead of sending the module to the epochs twin. (Also: the guard's body-size limit is
    checked on the original, so what Cranelift compiles is up to 5x what it allowed.)"""
    module = _calls_body(800_000)
    engine = wasmtime.Engine()
    wasmtime.Module.validate(engine, module)
    rewritten = tripwire.instrument(module)
    assert len(rewritten) > 4 * len(module)
    # The permissive profile allows 4 MiB bodies: this 1.6 MB one must load (rewritten, or
    # on the epochs twin). It was refused: ModuleError "function body size count exceeds
    # limit of 7654321".
    loaded = Sandbox(Policy.from_profile("permissive")).load(module)
    assert loaded.module is not None


# -- held: probe placement changes no semantics ------------------------------------------

PLACEMENT = """
(module
  (memory (export "memory") 1)
  (type $v (func))
  (type $r (func (result i32 i64 funcref)))
  (table $t 2 funcref)
  (global $g (mut i32) (i32.add (i32.const 1) (i32.const 2)))
  (global $h funcref (ref.func $multi))
  (elem (table $t) (i32.const 0) funcref (ref.func $multi) (ref.func $nop))
  (elem declare func $nop)
  (data (i32.const 0) "\\10\\00\\03\\40\\0b")
  (tag $e (param i32))
  (func $nop)
  (func $multi (type $r) (i32.const 7) (i64.const 8) (ref.func $nop))
  (func $dead (result i32)
    (return (i32.const 1))
    (call $nop) (call_indirect $t (type $v) (i32.const 1)) (call_ref $v (ref.func $nop))
    (memory.fill (i32.const 0) (i32.const 0) (i32.const 0)) (unreachable))
  (func $after_calls (result i32)
    (call $multi) (drop) (drop) (drop)
    (block $b (result i32) (try_table (result i32) (catch $e $b)
      (call $nop) (throw $e (i32.const 5)))))
  (func (export "_start")
    (if (i32.ne (call $dead) (i32.const 1)) (then unreachable))
    (if (i32.ne (call $after_calls) (i32.const 5)) (then unreachable))
    (if (i32.ne (global.get $g) (i32.const 3)) (then unreachable))))
"""


def test_held_probes_change_no_semantics_and_only_the_code_section() -> None:
    """Probes after calls in unreachable code, after multi-value and reference-returning
    calls and inside a try_table are valid and compute the same; element, global, data
    and tag sections (constant expressions with ref.func, extended const; a data segment
    whose bytes look like calls and a loop) are copied byte for byte."""
    module = bytes(wasmtime.wat2wasm(PLACEMENT))
    wasmtime.Module.validate(wasmtime.Engine(), module)
    rewritten = tripwire.instrument(module)
    wasmtime.Module.validate(wasmtime.Engine(), rewritten)

    def others(data: bytes) -> dict[int, bytes]:
        return {s.id: data[s.offset:s.end] for s in sections(data)
                if s.id not in (CODE, 5, 7, 8)}  # code, memory, export, start: rewritten

    assert others(rewritten) == others(module)
    code = next(s for s in sections(rewritten) if s.id == CODE)
    assert rewritten[code.offset:code.end].count(PROBE) >= 10
    run = run_hostile(PLACEMENT, bound=30.0)
    assert run["outcome"] == "exited", run


def test_held_atomic_wait_on_unshared_memory_traps_at_once() -> None:
    """memory.atomic.wait32 with no timeout on an unshared memory traps at once: it does
    not block in the host."""
    run = run_hostile("""(module (memory (export "memory") 1)
      (func (export "_start")
        (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))""",
               bound=30.0)
    assert run["outcome"] == "trap" and float(str(run["seconds"])) < TIMEOUT, run


def test_held_memory_grow_in_straight_line_is_bounded_by_the_limit() -> None:
    """memory.grow is neither a call nor in the bulk list: 20,000 one-page grows in straight
    line (the policy's limit refuses most) end well within the timeout."""
    grows = " ".join(["(drop (memory.grow (i32.const 1)))"] * 20000)
    run = run_hostile(f'(module (memory (export "memory") 1) (func (export "_start") {grows}))',
               bound=60.0)
    assert run["outcome"] in ("exited", "memory_limit"), run
    assert float(str(run["seconds"])) < TIMEOUT, run


def test_held_huge_table_grow_is_refused_by_the_limit() -> None:
    """table.grow by 2^31 with a non-null init (would fill 2^31 slots) is refused by the
    store's table limit before any work; the probe after it comes anyway."""
    run = run_hostile("""(module (memory (export "memory") 1) (table 1 funcref) (func $f)
      (elem declare func $f)
      (func (export "_start")
        (drop (table.grow (ref.func $f) (i32.const 0x7fffffff)))))""", bound=30.0)
    assert run["outcome"] == "exited" and float(str(run["seconds"])) < TIMEOUT, run


# -- held: the verdict -------------------------------------------------------------------

def test_held_a_trap_after_the_tripwire_fired_is_a_timeout_and_an_exit_is_an_exit() -> None:
    """A guest past its deadline that unwinds by exceptions meets a probe after each
    catching frame's `end`: stopped as a timeout whether its last frame would end in
    `unreachable` or return (it returned `exited`, ~0.6 s past its deadline, when catch
    labels were not probed)."""
    divs = " ".join(["(local.set $x (i64.div_u (local.get $x) (i64.load (i32.const 8))))"]
                    * 45000)
    for ending, outcome in (("(unreachable)", "timeout"), ("", "timeout")):
        # Frames unwind by exceptions (no probe), then the last frame ends as given.
        source = _unwind(5000, divs, throw=True).replace(
            "(block $top (try_table (catch_all $top) (call $f (i32.const 5000))))",
            f"(block $top (try_table (catch_all $top) (call $f (i32.const 5000)))) {ending}")
        run = run_hostile(source)
        assert run["outcome"] == outcome, run


# -- held: the page's lifecycle ----------------------------------------------------------

def _protection(address: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        low, high = (int(part, 16) for part in span.split("-"))
        if low <= address < high:
            return perms[:3]
    return "unmapped"


def test_held_tripwire_lifecycle_orders_fire_arm_and_disarm() -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE * 3)
    view = ctypes.c_char.from_buffer(page)
    try:
        address = ctypes.addressof(view) + mmap.PAGESIZE
        # Fired before armed (a deadline during instantiation, a cancellation first).
        trip = Tripwire()
        trip.fire()
        assert _protection(address) == "rw-"
        trip.arm(address)
        assert _protection(address) == "---"
        trip.fire()  # twice: no second revoke, no error
        trip.disarm()
        assert _protection(address) == "rw-"
        trip.fire()  # after disarm: the page (maybe another run's by now) is not touched
        assert _protection(address) == "rw-" and trip.fired
        # Armed, never fired: disarm leaves the page as it was.
        other = Tripwire()
        other.arm(address)
        other.disarm()
        assert _protection(address) == "rw-" and not other.fired
        # A slot's tripwire is reused: reset forgets the fire and the page.
        trip.reset()
        assert not trip.fired
        trip.arm(address)
        assert _protection(address) == "rw-"
        trip.fire()
        assert _protection(address) == "---"
        trip.disarm()
        assert _protection(address) == "rw-"
    finally:
        del view
        page.close()


def test_held_concurrent_runs_and_a_cancellation_leave_other_pages_alone() -> None:
    """Two spinning guests and two quick ones, four times over on one engine, one spinner
    cancelled: each spinner ends by its own deadline or cancellation, the quick ones exit,
    and a run afterwards is unharmed."""
    script = """
import json, threading, time
from stockade import ModuleError, Policy, Sandbox
from stockade.sandbox.cancel import CancelToken, cancellable
spin = b'(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'
quick = b'(module (memory (export "memory") 1) (func (export "_start")))'
sandbox = Sandbox(Policy.from_profile("default").with_limits(timeout=0.5))
sandbox.run(quick)
out = []
for _ in range(4):
    token = CancelToken()
    def cancelled():
        with cancellable(token):
            out.append(("cancelled", sandbox.run(spin).outcome.value))
    def plain(kind, module):
        out.append((kind, sandbox.run(module).outcome.value))
    threads = [threading.Thread(target=cancelled), threading.Thread(target=plain,
               args=("spin", spin))]
    threads += [threading.Thread(target=plain, args=("quick", quick)) for _ in range(2)]
    for t in threads: t.start()
    time.sleep(0.1); token.cancel()
    for t in threads: t.join(10)
out.append(("after", sandbox.run(quick).outcome.value))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    for kind, outcome in out:
        assert outcome == {"cancelled": "error", "spin": "timeout", "quick": "exited",
                           "after": "exited"}[kind], out
    assert len(out) == 17, out


def test_held_host_calls_after_the_deadline_are_refused() -> None:
    """After the deadline every host call is refused by the meter at its start (fd_write
    here, then a sleep in poll_oneoff would be cut): a guest that only makes host calls
    with no loop between them is still stopped."""
    start = time.monotonic()
    writes = " ".join(["(drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"]
                      * 2000)
    source = f"""(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1) (data (i32.const 0) "\\10\\00\\00\\00\\01\\00\\00\\00")
      (func $f (param $n i32)
        (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))
        {writes})
      (func (export "_start") (call $f (i32.const 200))))"""
    run = run_hostile(source, bound=60.0)
    assert run["outcome"] in ("timeout", "output_limit"), run
    assert float(str(run["seconds"])) < TIMEOUT + GRACE, run
    assert time.monotonic() - start < 60

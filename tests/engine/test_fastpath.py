"""The C-API fast path against real wasmtime: outputs, limits, isolation, threads, errors."""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import (
    EnvBlock,
    FastEngine,
    FastModule,
    FastPathUnavailable,
    FastResult,
    _capi,
    _native,
    _run,
)
from stockade.errors import DeniedImport, ModuleError, ModuleNotFound, UsageError
from stockade.result import Outcome

from ..conftest import guest


@pytest.fixture(autouse=True, params=["native", "python"])
def run_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the native run (one C call) and the ctypes one, which a machine
    without a C compiler uses; both must behave the same."""
    if request.param == "python":
        monkeypatch.setattr(_run, "NATIVE_RUN", None)
    return str(request.param)


def test_the_native_run_is_built_and_loaded() -> None:
    # `make setup` builds it (scripts/build_native.py); without it every run pays ~15
    # ctypes calls more.
    assert _native.LIBRARY.exists(), "run scripts/build_native.py"
    assert _native.NATIVE_RUN is not None


WASI = '(import "wasi_snapshot_preview1" "{name}" (func ${name} {sig}))'
FD_WRITE = WASI.format(name="fd_write", sig="(param i32 i32 i32 i32) (result i32)")
PROC_EXIT = WASI.format(name="proc_exit", sig="(param i32)")


def wat(body: str, extra: str = "", memory: str = "(memory (export \"memory\") 1)") -> bytes:
    """A WASI command module from a `_start` body, with `$print(ptr, len)` available and
    `extra` imports or globals."""
    return bytes(wasmtime.wat2wasm(f"""
    (module
      {FD_WRITE} {PROC_EXIT} {extra}
      {memory}
      (func $print (param $ptr i32) (param $len i32) (result i32)
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (func (export "_start") {body}))
    """))


# Memory and a global both count runs; a leak between instances would print "2".
COUNTER = wat("""
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.store8 (i32.const 64) (i32.add (i32.load8_u (i32.const 64)) (i32.const 1)))
    (i32.store8 (i32.const 65) (i32.add (i32.const 48) (global.get $g)))
    (drop (call $print (i32.const 64) (i32.const 2)))
""", extra="(global $g (mut i32) (i32.const 0))")
SPIN = wat("(loop $l (br $l))")
GROW = wat("""
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable
""")
TRAP = wat("unreachable")
RECURSE = wasmtime.wat2wasm("""
    (module (memory (export "memory") 1)
      (func $f (export "_start") (call $f)))
""")
EXIT7 = wat("(call $proc_exit (i32.const 7))")
# Writes 64 KiB blocks until a write fails, then exits 3.
FLOOD = wat("""
    (loop $l (br_if $l (i32.eqz (call $print (i32.const 1024) (i32.const 65536)))))
    (call $proc_exit (i32.const 3))
""", memory='(memory (export "memory") 2)')
ENVIRON = wat("""
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (drop (call $get (i32.const 1024) (i32.const 4096)))
    (drop (call $print (i32.const 4096) (i32.load (i32.const 20))))
""", extra="""
    (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
""")


@pytest.fixture(scope="module")
def engine() -> Iterator[FastEngine]:
    with FastEngine(EngineConfig(), max_instances=8, max_memory=64 * 1024**2) as fast:
        yield fast


@pytest.fixture(scope="module")
def hello(engine: FastEngine) -> FastModule:
    return engine.compile(guest("hello.wasm").read_bytes(), "hello.wasm")


def wasmtime_py_hello(path: Path, args: list[str], stdin: bytes, tmp: Path) -> tuple[bytes, int]:
    """The same run through wasmtime-py's wrappers (the reference): stdout and fuel used."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module.from_file(engine, str(path)))
    store = wasmtime.Store(engine)
    store.set_fuel(10**9)
    store.set_epoch_deadline(1000)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["hello.wasm", *args]
    (tmp / "in").write_bytes(stdin)
    wasi.stdin_file = str(tmp / "in")
    wasi.stdout_file = str(tmp / "out")
    store.set_wasi(wasi)
    start = pre.instantiate(store).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    start(store)
    fuel = 10**9 - store.get_fuel()
    store.close()
    return (tmp / "out").read_bytes(), fuel


def test_hello_matches_wasmtime_py(engine: FastEngine, hello: FastModule, tmp_path: Path) -> None:
    result = engine.run(hello, ["one", "two words"], stdin=b"echo me\n", fuel=10**9,
                        timeout_s=5.0, max_output=1 << 20)
    assert isinstance(result, FastResult)
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (Outcome.EXITED, 0, 0)
    expected, fuel = wasmtime_py_hello(guest("hello.wasm"), ["one", "two words"], b"echo me\n",
                                       tmp_path)
    assert (result.stdout, result.fuel_consumed) == (expected, fuel)
    assert result.stdout.startswith(b"Hello from a Stockade sandbox!\narg 1: one\n")
    assert result.stderr == b"" and not result.stdout_truncated
    assert result.memory_bytes >= 65536


def test_large_stdin_is_echoed(hello: FastModule) -> None:
    data = bytes(range(256)) * 4096
    result = hello.run(stdin=data, max_output=2 << 20)
    assert result.stdout.endswith(data)


def test_environment_is_exactly_what_was_given(engine: FastEngine) -> None:
    module = engine.compile(ENVIRON, "environ.wasm")
    result = module.run(env={"A": "1", "GREETING": "hi there"})
    assert result.stdout == b"A=1\0GREETING=hi there\0"
    assert module.run().stdout == b""


def test_no_state_leaks_between_runs(engine: FastEngine) -> None:
    module = engine.compile(COUNTER, "counter.wasm")
    outputs = {module.run().stdout for _ in range(20)}
    assert outputs == {b"\x011"}


def test_stderr_is_captured_or_discarded(engine: FastEngine) -> None:
    both = wat("""
        (i32.store (i32.const 100) (i32.const 0x0074756f))
        (i32.store (i32.const 104) (i32.const 0x00727265))
        (drop (call $print (i32.const 100) (i32.const 3)))
        (i32.store (i32.const 0) (i32.const 104))
        (i32.store (i32.const 4) (i32.const 3))
        (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    """)
    module = engine.compile(both, "both.wasm")
    captured = module.run()
    assert (captured.stdout, captured.stderr) == (b"out", b"err")
    discarded = module.run(capture_stderr=False)
    assert (discarded.stdout, discarded.stderr) == (b"out", b"")
    # A write past the cap keeps what fits and stops the guest, its stream marked cut.
    capped = module.run(max_output=4)
    assert (capped.outcome, capped.stdout, capped.stderr) == (Outcome.OUTPUT_LIMIT, b"out", b"e")
    assert (capped.stdout_truncated, capped.stderr_truncated) == (False, True)


def test_exit_code(engine: FastEngine) -> None:
    result = engine.compile(EXIT7, "exit7.wasm").run()
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (Outcome.EXITED, 7, 7)


def test_fuel_exhaustion(engine: FastEngine) -> None:
    result = engine.compile(SPIN, "spin.wasm").run(fuel=10_000)
    assert result.outcome is Outcome.FUEL_EXHAUSTED
    assert result.exit_code == 124 and result.guest_exit_code is None
    assert result.fuel_consumed == 10_000


def test_timeout(engine: FastEngine) -> None:
    result = engine.compile(SPIN, "spin.wasm").run(timeout_s=0.05)
    assert result.outcome is Outcome.TIMEOUT
    assert result.exit_code == 124
    assert result.wall_s >= 0.05


def test_no_fuel_count_after_a_timeout_in_guest_code(engine: FastEngine) -> None:
    # wasmtime writes the count to the store at calls and returns: a loop without calls
    # stopped by its deadline left 0 there. Not known, so none (tests/sandbox has more).
    result = engine.compile(SPIN, "spin.wasm").run(fuel=10**13, timeout_s=0.1)
    assert result.outcome is Outcome.TIMEOUT
    assert result.fuel_consumed is None


@pytest.mark.parametrize(("code", "process_code"), [(126, 126), (200, 200), (255, 255),
                                                    (256, 255), (-1, 255)])
def test_exit_codes_of_126_or_more_are_exits(engine: FastEngine, code: int,
                                             process_code: int) -> None:
    result = engine.compile(wat(f"(call $proc_exit (i32.const {code}))"), "exits.wasm").run()
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (
        Outcome.EXITED, code & 0xFFFFFFFF, process_code), result.message


def test_a_refused_grow_then_a_failure_is_the_memory_limit(engine: FastEngine) -> None:
    module = engine.compile(wat("(if (i32.eq (memory.grow (i32.const 16384)) (i32.const -1)) "
                                "(then (call $proc_exit (i32.const 1))))"), "grows.wasm")
    result = module.run(max_memory=16 * 1024**2)
    assert (result.outcome, result.exit_code) == (Outcome.MEMORY_LIMIT, 137), result.message
    assert result.memory_bytes == 65536


POLL = """(import "wasi_snapshot_preview1" "poll_oneoff"
             (func $poll (param i32 i32 i32 i32) (result i32)))"""


def poller(tag: int, nanoseconds: int) -> bytes:
    """Polls one subscription (userdata 42; clock: relative monotonic wait; else fd 0) and
    exits with 10 * errno + number of events, or 99 when the event is not the one."""
    return wat(f"""
        (i64.store (i32.const 200) (i64.const 42))
        (i32.store8 (i32.const 208) (i32.const {tag}))
        (i32.store (i32.const 216) (i32.const {1 if tag == 0 else 0}))
        (i64.store (i32.const 224) (i64.const {nanoseconds}))
        (global.set $errno
          (call $poll (i32.const 200) (i32.const 300) (i32.const 1) (i32.const 400)))
        (if (i64.ne (i64.load (i32.const 300)) (i64.const 42))
          (then (call $proc_exit (i32.const 99))))
        (call $proc_exit (i32.add (i32.mul (global.get $errno) (i32.const 10))
                                  (i32.load (i32.const 400))))
    """, extra=POLL + "(global $errno (mut i32) (i32.const 0))")


def test_a_sleeping_guest_is_stopped_at_its_deadline(engine: FastEngine) -> None:
    result = engine.compile(poller(0, 60 * 10**9), "sleep.wasm").run(timeout_s=0.2)
    assert result.outcome is Outcome.TIMEOUT
    assert "sleeping" in result.message


def test_a_short_sleep_completes(engine: FastEngine) -> None:
    result = engine.compile(poller(0, 10**6), "nap.wasm").run(timeout_s=10.0)
    assert (result.outcome, result.guest_exit_code) == (Outcome.EXITED, 1)


def test_polling_stdin_is_ready_at_once(engine: FastEngine) -> None:
    result = engine.compile(poller(1, 0), "poll.wasm").run(timeout_s=10.0)
    assert (result.outcome, result.guest_exit_code) == (Outcome.EXITED, 1)


def test_memory_limit_on_grow(engine: FastEngine) -> None:
    result = engine.compile(GROW, "grow.wasm").run(max_memory=2 * 1024**2)
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert result.exit_code == 137
    assert result.memory_bytes == 2 * 1024**2


def test_memory_limit_at_instantiation(engine: FastEngine) -> None:
    module = engine.compile(wat("nop", memory="(memory 64)"), "big.wasm")
    result = module.run(max_memory=1024**2)
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert module.run().outcome is Outcome.EXITED


@pytest.mark.parametrize(("name", "args", "limits", "outcome"), [
    ("memhog.wasm", [], {"max_memory": 16 * 1024**2}, Outcome.MEMORY_LIMIT),
    ("flood.wasm", [], {"max_output": 1 << 20}, Outcome.OUTPUT_LIMIT),
    ("flood.wasm", ["stderr"], {"max_output": 1 << 20}, Outcome.OUTPUT_LIMIT),
    ("sleeper.wasm", ["30"], {"timeout_s": 1}, Outcome.TIMEOUT),
    ("spin.wasm", [], {"fuel": 10**6}, Outcome.FUEL_EXHAUSTED),
])
def test_limits_hold_against_the_c_guests(
    engine: FastEngine, name: str, args: list[str], limits: dict[str, int], outcome: Outcome
) -> None:
    module = engine.compile(guest(name).read_bytes(), name)
    result = module.run(args, fuel=limits.get("fuel"), timeout_s=limits.get("timeout_s", 30),
                        max_memory=limits.get("max_memory"), max_output=limits.get("max_output"))
    assert result.outcome is outcome, result.message


def test_trap(engine: FastEngine) -> None:
    result = engine.compile(TRAP, "trap.wasm").run()
    assert result.outcome is Outcome.TRAP and result.exit_code == 134
    assert "unreachable" in result.message


def test_stack_overflow_is_a_trap(engine: FastEngine) -> None:
    result = engine.compile(RECURSE, "recurse.wasm").run()
    assert result.outcome is Outcome.TRAP
    assert "stack" in result.message


def test_output_cap_stops_a_retried_short_write(hello: FastModule) -> None:
    result = hello.run(["x"], max_output=10)
    assert result.outcome is Outcome.OUTPUT_LIMIT and result.exit_code == 153
    assert result.stdout == b"Hello from" and result.stdout_truncated


def test_output_cap_stops_a_flood_while_running(engine: FastEngine) -> None:
    result = engine.compile(FLOOD, "flood.wasm").run(max_output=1 << 20, timeout_s=30.0)
    assert result.outcome is Outcome.OUTPUT_LIMIT
    assert len(result.stdout) == 1 << 20 and result.stdout_truncated
    # Stopped at its first write into the full cap: no byte past it was ever written.
    assert result.guest_exit_code is None


def test_concurrent_runs_from_four_threads(engine: FastEngine, hello: FastModule) -> None:
    failures: list[str] = []

    def worker(index: int) -> None:
        for turn in range(50):
            stdin = f"thread {index} turn {turn}\n".encode()
            result = hello.run([str(index)], stdin=stdin, timeout_s=10.0)
            expected = f"arg 1: {index}\n".encode() + stdin
            if not result.stdout.endswith(expected) or result.outcome is not Outcome.EXITED:
                failures.append(f"{index}/{turn}: {result}")

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_more_threads_than_pool_slots_wait_their_turn(hello: FastModule) -> None:
    with FastEngine(max_instances=1) as small:
        module = small.compile(guest("hello.wasm").read_bytes(), "hello.wasm")
        results: list[FastResult] = []
        threads = [threading.Thread(target=lambda: results.append(module.run()))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.outcome for r in results] == [Outcome.EXITED] * 3


def test_waiting_callers_are_admitted_in_arrival_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """First come, first served: woken waiters used to race for a freed slot, and the
    caller that had just freed it could take it again at once (one of six threads
    sharing three slots waited 15 s behind runs of 10 ms)."""
    with FastEngine(max_instances=1) as small:
        spin = small.compile(wat("(loop $l (br $l))"), "spin.wasm")
        quick = small.compile(wat(""), "quick.wasm")
        admitted: list[str] = []
        admit = small._admit

        def recorded(module: FastModule) -> Any:
            slot = admit(module)  # the slot is held until this run ends: no one passes
            admitted.append(threading.current_thread().name)
            return slot

        monkeypatch.setattr(small, "_admit", recorded)
        holder = threading.Thread(target=spin.run, kwargs={"timeout_s": 0.5}, name="holder")
        holder.start()
        _until(lambda: admitted == ["holder"])
        waiters = []
        for index in range(5):
            waiter = threading.Thread(target=quick.run, name=f"waiter{index}")
            waiter.start()
            waiters.append(waiter)
            _until(lambda queued=index + 1: len(small._queue) == queued)  # behind the others
        for thread in (holder, *waiters):
            thread.join(30)
        assert admitted == ["holder", *(f"waiter{index}" for index in range(5))]


def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


@pytest.mark.parametrize("tripwire", [False, True], ids=["epochs", "tripwire"])
def test_a_one_slot_pool_runs_a_module_using_gc_types(tripwire: bool) -> None:
    """A GC heap is a memory from the pool too: a one-slot pool (`CapiSandbox`'s) refused
    every module using GC types ("maximum concurrent limit of 1 for memory")."""
    config = EngineConfig(fuel=False, epochs=not tripwire, tripwire=tripwire, gc=True)
    gc = bytes(wasmtime.wat2wasm("""(module (type $a (array (mut i64)))
      (memory (export "memory") 1)
      (func (export "_start") (drop (array.new_default $a (i32.const 1000)))))"""))
    with FastEngine(config, max_instances=1) as small:
        result = small.compile(gc, "gc.wasm").run(timeout_s=10.0)
    assert result.outcome is Outcome.EXITED, result.message


def test_close_twice_and_use_after_close() -> None:
    fast = FastEngine(max_instances=2)
    module = fast.compile(TRAP, "trap.wasm")
    module.close()
    module.close()
    with pytest.raises(UsageError):
        module.run()
    fast.close()
    fast.close()
    with pytest.raises(UsageError):
        fast.compile(TRAP)


def test_an_engine_refuses_to_run_in_a_forked_child(hello: FastModule) -> None:
    hello.run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:
        try:
            hello.run()
        except UsageError as exc:
            os._exit(0 if "fork" in str(exc) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert hello.run().outcome is Outcome.EXITED


def test_garbage_bytes_are_a_module_error(engine: FastEngine) -> None:
    with pytest.raises(ModuleError, match="not a WebAssembly binary"):
        engine.compile(b"garbage", "junk.wasm")
    with pytest.raises(ModuleError, match="junk.wasm"):
        engine.compile(b"\0asm\x01\0\0\0garbage", "junk.wasm")
    with pytest.raises(ModuleError, match="junk.cwasm"):
        engine.deserialize(b"\x7fELF garbage", "junk.cwasm")
    with pytest.raises(ModuleNotFound):
        engine.deserialize_file("/nonexistent/module.cwasm")


def test_imports_beyond_wasi_are_denied(engine: FastEngine) -> None:
    module = wasmtime.wat2wasm("""
        (module (import "env" "socket" (func)) (memory 1) (func (export "_start")))
    """)
    with pytest.raises(DeniedImport) as caught:
        engine.compile(module, "sock.wasm")
    assert caught.value.import_name == "env::socket"


def test_a_module_without_start_is_refused(engine: FastEngine) -> None:
    with pytest.raises(ModuleError, match="_start"):
        engine.compile(wasmtime.wat2wasm("(module (func (export \"main\")))"), "lib.wasm")


def test_cwasm_roundtrip_and_from_wasmtime_py(engine: FastEngine, tmp_path: Path) -> None:
    wasm = guest("hello.wasm").read_bytes()
    path = tmp_path / "hello.cwasm"
    path.write_bytes(engine.compile(wasm, "hello.wasm").serialize())
    assert engine.deserialize_file(path).run().stdout.startswith(b"Hello")
    # Compiled by wasmtime-py's default (on-demand) allocator with the same code flags.
    same = EngineConfig().to_wasmtime()
    foreign = wasmtime.Module(wasmtime.Engine(same), wasm).serialize()
    assert engine.deserialize(bytes(foreign), "py.cwasm").run().stdout.startswith(b"Hello")
    # Fuel instrumentation must match.
    no_fuel = EngineConfig(fuel=False).to_wasmtime()
    other = wasmtime.Module(wasmtime.Engine(no_fuel), wasm).serialize()
    with pytest.raises(ModuleError, match="fuel"):
        engine.deserialize(bytes(other), "nofuel.cwasm")


def test_bad_arguments_are_usage_errors(engine: FastEngine, hello: FastModule) -> None:
    with pytest.raises(UsageError):
        hello.run(["nul\0byte"])
    with pytest.raises(UsageError, match="'A=B'"):
        hello.run(env={"A=B": "x"})
    with pytest.raises(UsageError, match="environment value"):
        hello.run(env=[("OK", "x"), ("B", "nul\0")])
    with pytest.raises(UsageError, match="environment name"):
        hello.run(env=[("OK", "x"), ("B\0", "y")])
    with pytest.raises(UsageError, match="Unicode"):
        hello.run(env={"A": "\ud800"})
    with pytest.raises(UsageError, match="must be a string"):
        hello.run(env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(UsageError):
        hello.run(max_memory=engine.max_memory + 1)
    with pytest.raises(UsageError):
        hello.run(max_output=-1)
    for timeout in (0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="positive number of seconds"):
            hello.run(timeout_s=timeout)
    with FastEngine(EngineConfig(fuel=False), max_instances=1) as unmetered:
        module = unmetered.compile(guest("hello.wasm").read_bytes(), "hello.wasm")
        assert module.run().fuel_consumed is None  # not metered: null in --json
        with pytest.raises(UsageError, match="fuel"):
            module.run(fuel=100)


def test_to_result(hello: FastModule) -> None:
    result = hello.run(["a"]).to_result("hello.wasm", "0" * 64, {"fuel": None})
    assert result.ok and result.to_dict()["outcome"] == "exited"
    assert result.usage.peak_memory_bytes >= 65536


def test_version_pin() -> None:
    assert _capi.installed_wasmtime() == importlib.metadata.version("wasmtime")
    _capi.check_version("50.0.1")
    with pytest.raises(FastPathUnavailable, match="pinned to wasmtime 50"):
        _capi.check_version("51.0.0")


def test_more_strings_than_the_native_run_takes(hello: FastModule) -> None:
    env = {f"V{i}": str(i) for i in range(_native.MAX_STRINGS + 10)}
    assert hello.run(["a"], env).outcome is Outcome.EXITED


def test_a_plan_runs_many_times_and_a_malformed_block_is_refused(
        engine: FastEngine, hello: FastModule) -> None:
    plan = engine.plan(hello, ["x"], timeout_s=10.0, max_output=1 << 16)
    block = EnvBlock(b"GREETING\0B\0", b"hi\0\0", 2)
    outputs = {engine.run_plan(plan, block).stdout for _ in range(3)}
    assert len(outputs) == 1 and b"x" in outputs.pop()
    # Entries that do not match the count, or are not UTF-8, never reach the guest.
    for bad in (EnvBlock(b"A\0B", b"1\0\0", 2), EnvBlock(b"A\0", b"1\0", 2),
                EnvBlock(b"A\0", b"\xff\0", 1)):
        with pytest.raises(ValueError):
            engine.run_plan(plan, bad)
    assert engine.run_plan(plan, block).outcome is Outcome.EXITED


# -- host calls bounded in memory and time (the sandbox's own tests: tests/hostcalls) --

@pytest.fixture(scope="module")
def roomy() -> Iterator[FastEngine]:
    """An engine whose guests may hold 15 million iovecs (120 MB)."""
    with FastEngine(EngineConfig(), max_instances=2, max_memory=256 * 1024**2) as fast:
        yield fast


def bomb(engine: FastEngine, name: str, *args: str, stdin: bytes = b"",
         **limits: Any) -> FastResult:
    module = engine.compile(guest(name).read_bytes(), name)
    return module.run(list(args), stdin=stdin, **limits)


@pytest.mark.parametrize("clock", ["mono", "real"])
def test_an_absolute_sleep_is_stopped_at_the_deadline(engine: FastEngine, clock: str) -> None:
    result = bomb(engine, "poll_bomb.wasm", "abs", "8", clock, timeout_s=1.0)
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert 0.9 <= result.wall_s <= 1.1 + 0.5


def test_an_absolute_sleep_within_the_deadline_completes(engine: FastEngine) -> None:
    result = bomb(engine, "poll_bomb.wasm", "abs", "1", "mono", timeout_s=10.0)
    assert result.outcome is Outcome.EXITED and b"errno 0" in result.stdout
    assert 0.9 <= result.wall_s <= 1.1 + 0.5


def test_millions_of_subscriptions_are_refused_at_once(roomy: FastEngine) -> None:
    result = bomb(roomy, "poll_bomb.wasm", "many", "1300000", timeout_s=1.0)
    assert result.outcome is Outcome.EXITED, result.message
    assert b"poll_bomb: errno 28 events 0" in result.stdout
    assert result.wall_s <= 1.1 + 0.5


def test_a_mixed_poll_returns_the_ready_descriptor(engine: FastEngine) -> None:
    result = bomb(engine, "poll_bomb.wasm", "mixed", "8", "0", timeout_s=1.0)
    assert result.outcome is Outcome.EXITED and b"errno 0 events 1" in result.stdout


def test_iovecs_over_one_buffer_stop_at_the_cap(engine: FastEngine) -> None:
    result = bomb(engine, "iovec_bomb.wasm", "same", "stdout", max_output=1 << 20,
                  timeout_s=10.0)
    assert result.outcome is Outcome.OUTPUT_LIMIT and len(result.stdout) == 1 << 20
    assert result.guest_exit_code is None


@pytest.mark.parametrize("target", ["stdout", "stdin"])
def test_millions_of_zero_length_iovecs_are_refused(roomy: FastEngine, target: str) -> None:
    result = bomb(roomy, "iovec_bomb.wasm", "zero", target, stdin=b"in", timeout_s=1.0)
    assert result.outcome is Outcome.EXITED and result.wall_s <= 1.1 + 0.5
    assert b"iovec_bomb: call 1 errno 28 bytes 0" in result.stderr


def test_stdin_reads_are_bounded(engine: FastEngine) -> None:
    result = bomb(engine, "iovec_bomb.wasm", "same", "stdin", "128", "1",
                  stdin=b"i" * (3 << 20), timeout_s=10.0)
    assert result.outcome is Outcome.EXITED
    got = [int(line.split()[-1]) for line in result.stderr.decode().splitlines()]
    # One buffer per call, as wasmtime's WASI reads; 0 at the end of input.
    assert sum(got) == 3 << 20 and all(0 <= n <= 1 << 20 for n in got)


def test_host_call_budget_stops_a_write_flood(engine: FastEngine) -> None:
    result = engine.compile(FLOOD, "flood.wasm").run(max_hostcalls=1000, timeout_s=30.0)
    assert (result.outcome, result.exit_code) == (Outcome.HOSTCALL_LIMIT, 153)
    assert 0 < len(result.stdout) <= 1000 * 65536


def test_host_call_budget_counts_sleeps(engine: FastEngine) -> None:
    module = engine.compile(poller(0, 10**6), "nap.wasm")
    assert module.run(max_hostcalls=1).outcome is Outcome.EXITED
    assert module.run(max_hostcalls=0).outcome is Outcome.HOSTCALL_LIMIT


def test_host_call_budget_leaves_ordinary_runs_alone(engine: FastEngine, hello: FastModule) -> None:
    result = engine.run(hello, ["x"], stdin=b"in", max_hostcalls=100)
    assert result.outcome is Outcome.EXITED and result.stdout.endswith(b"in")
    assert engine.run(hello, max_hostcalls=1).outcome is Outcome.HOSTCALL_LIMIT

"""The C-API fast path keeps its deadline with a tripwire (`engine.trip`), armed by the
native run in C and by the ctypes run (every test runs on both, `run_mode`): spinning
guests, a spinning start function, reused slots, concurrent runs, metered runs, and a
module without its page, which must never run on an engine without epochs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, Policy, Sandbox
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine
from stockade.errors import ModuleError
from stockade.hostcalls.meter import Meter
from stockade.result import Outcome

from .test_fastpath import run_mode  # noqa: F401 - the native and the ctypes run

TIMEOUT = 0.3
BOUND = 5.0  # a stopped guest ends well within this (a missed deadline: never)

SPIN = b'(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'
QUICK = b'(module (memory (export "memory") 1) (func (export "_start")))'
START_SPIN = b"""(module (memory (export "memory") 1)
  (func $spin (loop $l (br $l))) (start $spin) (func (export "_start")))"""
# Recursion entered before the deadline, bulk work in every frame as it unwinds.
UNWIND = b"""(module (memory (export "memory") 1024)
  (func $f (param $n i32)
    (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 67108864))
    (memory.fill (i32.const 0) (i32.const 2) (i32.const 67108864)))
  (func (export "_start") (call $f (i32.const 1000))))"""


def binary(text: bytes) -> bytes:
    return bytes(wasmtime.wat2wasm(text.decode()))


@pytest.fixture(scope="module")
def engine() -> FastEngine:
    config = EngineConfig.for_limits(Policy.from_profile("default").limits)
    assert config.tripwire and not config.epochs, config.describe()
    return FastEngine(config, max_instances=4)


def test_the_default_configuration_has_no_epochs_and_a_tripwire(engine: FastEngine) -> None:
    assert engine.config.settings() == EngineConfig(fuel=False, epochs=False).settings()


@pytest.mark.parametrize("source", [SPIN, START_SPIN, UNWIND], ids=["loop", "start", "unwind"])
def test_spinning_guests_are_stopped_at_the_deadline(engine: FastEngine,
                                                     source: bytes) -> None:
    module = engine.compile(binary(source), "spin.wasm")
    begun = time.monotonic()
    result = module.run(timeout_s=TIMEOUT)
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert result.message == "wall-clock timeout"
    assert time.monotonic() - begun < BOUND


def test_a_slot_a_deadline_tripped_serves_the_next_run(engine: FastEngine) -> None:
    """The slot's page is given back and its tripwire reset: runs after a timeout exit,
    and a deadline of theirs still holds."""
    spin, quick = engine.compile(binary(SPIN)), engine.compile(binary(QUICK))
    for _ in range(3):
        assert spin.run(timeout_s=0.05).outcome is Outcome.TIMEOUT
        assert quick.run(timeout_s=TIMEOUT).outcome is Outcome.EXITED
        assert quick.run().outcome is Outcome.EXITED


def test_a_trip_stops_only_its_own_run(engine: FastEngine) -> None:
    """Two spinners and quick runs at once: each spinner ends at its own deadline, the
    quick ones exit, never tripped by another run's page."""
    spin, quick = engine.compile(binary(SPIN)), engine.compile(binary(QUICK))
    outcomes: list[tuple[str, Outcome]] = []

    def run(kind: str, timeout: float | None) -> None:
        module = spin if kind == "spin" else quick
        for _ in range(5 if kind == "quick" else 1):
            outcomes.append((kind, module.run(timeout_s=timeout).outcome))

    threads = [threading.Thread(target=run, args=("spin", 0.2 + 0.1 * index))
               for index in range(2)]
    threads += [threading.Thread(target=run, args=("quick", 10.0)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND * 2)
    expected = {"spin": Outcome.TIMEOUT, "quick": Outcome.EXITED}
    assert len(outcomes) == 12 and all(outcome is expected[kind]
                                       for kind, outcome in outcomes), outcomes


def test_a_module_without_its_page_never_runs(engine: FastEngine) -> None:
    """Code compiled with the same settings but not rewritten (a `.cwasm` made by an
    engine without epochs or tripwire) would run with no deadline at all: refused."""
    bare = FastEngine(EngineConfig(fuel=False, epochs=False), max_instances=1)
    try:
        cwasm = bare.compile(binary(SPIN), "bare.wasm").serialize()
    finally:
        bare.close()
    module = engine.deserialize(cwasm, "bare.wasm")
    with pytest.raises(ModuleError, match="tripwire is missing"):
        module.run(timeout_s=TIMEOUT)


def test_a_metered_run_keeps_the_same_deadline(engine: FastEngine, tmp_path: Path) -> None:
    limits = Policy.from_profile("default").with_limits(timeout=TIMEOUT).limits
    module = engine.compile(binary(SPIN), "spin.wasm")
    meter = Meter(limits, time.monotonic() + TIMEOUT, [(tmp_path, True)], b"")
    begun = time.monotonic()
    result = engine.run_metered(module, meter, dirs=["/out"])
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert time.monotonic() - begun < BOUND


def test_the_fast_path_and_the_sandbox_agree(engine: FastEngine) -> None:
    policy = Policy.from_profile("default").with_limits(timeout=TIMEOUT)
    with Sandbox(policy) as sandbox:
        loaded = sandbox.load(binary(START_SPIN))
        assert loaded.tripwire
        standard = sandbox.run(loaded, Invocation())
    fast = engine.compile(binary(START_SPIN)).run(timeout_s=TIMEOUT)
    assert (fast.outcome, fast.message, fast.exit_code) == \
        (standard.outcome, standard.message, standard.exit_code)


# One random_get over the whole memory: 1 GiB took about 3.7 s, all of it past a 0.2 s
# deadline, before the owned call filled in chunks and looked at the tripwire between them.
RANDOM_ALL = b"""(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 16384)
  (func (export "_start") (drop (call $random (i32.const 0) (i32.const 1073741824)))))"""


def test_one_random_get_over_all_memory_stops_at_the_deadline() -> None:
    config = EngineConfig.for_limits(Policy.from_profile("default").limits)
    with FastEngine(config, max_instances=1, max_memory=1024**3) as large:
        module = large.compile(binary(RANDOM_ALL), "random.wasm")
        begun = time.monotonic()
        result = module.run(timeout_s=0.2)
        elapsed = time.monotonic() - begun
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert elapsed < 0.2 + 1.0, elapsed


# One random_get over 256 MiB, then "done" written: the deadline passes inside the call.
# On an epochs engine (fuel, or no tripwire) the owned call looked only at the tripwire,
# which such a run does not have: it filled the whole buffer (seconds for 1 GiB), and the
# guest, meeting no epoch check before its next host call and its return, printed "done"
# and exited 0 past its timeout.
RANDOM_THEN_WRITE = b"""(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4096)
  (data (i32.const 0) "\\10\\00\\00\\00\\05\\00\\00\\00")
  (data (i32.const 16) "done\\n")
  (func (export "_start")
    (drop (call $random (i32.const 64) (i32.const 268435392)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))"""


@pytest.mark.parametrize("config", [
    EngineConfig(fuel=True, epochs=True), EngineConfig(fuel=False, epochs=True),
    EngineConfig(fuel=False, epochs=False, tripwire=True)], ids=["fuel", "epochs", "tripwire"])
def test_a_long_random_get_stops_at_the_deadline_on_every_engine(
        config: EngineConfig) -> None:
    with FastEngine(config, max_instances=1, max_memory=256 * 1024**2) as engine:
        module = engine.compile(binary(RANDOM_THEN_WRITE), "random.wasm")
        result = module.run(timeout_s=0.02, fuel=10**12 if config.fuel else None)
    assert result.outcome is Outcome.TIMEOUT, (result.outcome, result.message)
    assert result.stdout == b""


@pytest.mark.parametrize("workload", [["spin.wasm"], ["sleeper.wasm", "300"]],
                         ids=["spinning", "sleeping"])
def test_a_cancellation_stops_a_fast_path_run_and_only_that_run(workload: list[str]) -> None:
    """A `CancelToken` of the run's thread (`stockade.cancel`, what Ctrl-C uses in
    `stockade run`) fires the slot's tripwire and wakes its `poll_oneoff`; the slot's next
    run, without a token, sleeps its whole time and exits."""
    from stockade.cancel import CancelToken, cancellable
    from tests.conftest import guest

    with FastEngine(EngineConfig.for_limits(Policy.from_profile("default").limits),
                    max_instances=1) as engine:  # one slot: the next run reuses it
        module = engine.compile(guest(workload[0]).read_bytes(), workload[0])
        token = CancelToken()
        threading.Timer(0.5, token.cancel).start()
        begun = time.monotonic()
        with cancellable(token):
            stopped = module.run(workload[1:], timeout_s=300.0)
        assert time.monotonic() - begun < BOUND
        # The caller's choice, not a violation: `error`, as `Sandbox` reports it.
        assert stopped.outcome is Outcome.ERROR and "cancelled" in stopped.message, \
            stopped.message
        token.cancel()  # after the run: touches nothing
        began = time.monotonic()
        sleeper = engine.compile(guest("sleeper.wasm").read_bytes(), "sleeper.wasm")
        slept = sleeper.run(["1"], timeout_s=30.0)
        assert slept.outcome is Outcome.EXITED, slept.message
        assert slept.stdout.endswith(b"woke up\n")
        assert time.monotonic() - began >= 0.95


def test_a_run_a_cancellation_did_not_stop_still_times_out() -> None:
    """On an engine with epochs (a fuel budget) a cancellation wakes a sleep but does not
    reach a spinning guest: a run that lasted to its own deadline is a timeout, not a
    cancellation."""
    from stockade.cancel import CancelToken, cancellable
    from tests.conftest import guest

    with FastEngine(EngineConfig(fuel=True, epochs=True), max_instances=1) as engine:
        spin = engine.compile(guest("spin.wasm").read_bytes(), "spin.wasm")
        token = CancelToken()
        threading.Timer(0.2, token.cancel).start()
        with cancellable(token):
            result = spin.run(timeout_s=1.0, fuel=10**12)
    assert result.outcome is Outcome.TIMEOUT, result.message

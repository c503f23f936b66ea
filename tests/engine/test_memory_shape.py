"""The shape of every linear memory (EngineConfig: a 4 GiB reservation plus a guard region):
compiled code checks no bounds on its own, so the shape alone must stop a guest's reach
past its memory, on both engines, including offsets far beyond the guard.

wasmtime says how a trap was caught: "memory fault at wasm address" when the access hit
unmapped address space (no check was compiled: the shape did the work), a bare "out of
bounds memory access" when compiled code checked. A slot too small for the shape turns
the first kind into the second, and costs 1.2-1.3x on SHA-256 and quicksort."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wasmtime

from stockade.engine.config import MEMORY_GUARD, MEMORY_RESERVATION, EngineConfig
from stockade.engine.fastpath import FastEngine
from stockade.isolate.rlimits import vm_size
from stockade.result import Outcome

# (address, static offset, bytes loaded): where a 1-page guest reads.
INSIDE = (65_532, 0, 4)  # the last four bytes of its one page
# Caught by the address space alone (no compiled check).
UNCHECKED = {
    "straddling the end of memory": (65_533, 0, 4),
    "in the unmapped reservation": (0x8000_0000, 0, 8),
    "at the top of the 4 GiB reservation": (0xFFFF_FFFC, 0, 4),
    "in the guard region past 4 GiB": (0xFFFF_FFFF, MEMORY_GUARD - 64, 8),
}
# An offset the guard cannot cover: wasmtime compiles a check for it.
CHECKED = {"past the guard": (0xFFFF_FFFF, 0xFFFF_FFFF, 8)}
REACHES = UNCHECKED | CHECKED
FAULT = "memory fault at wasm address"



def reader(address: int, offset: int, size: int) -> bytes:
    """A WASI command that loads `size` bytes at `address + offset` and exits 0."""
    load = "i64.load" if size == 8 else "i32.load"
    return bytes(wasmtime.wat2wasm(f"""
    (module
      (memory (export "memory") 1)
      (func (export "_start")
        (drop ({load} offset={offset} (i32.const {address})))))"""))


@pytest.fixture(scope="module")
def fast() -> Iterator[FastEngine]:
    engine = FastEngine(EngineConfig(fuel=False), max_instances=2, max_memory=64 << 20)
    yield engine
    engine.close()


def test_the_configuration_pins_static_guarded_memories() -> None:
    settings = dict(EngineConfig().settings())
    # 4 GiB covers every 32-bit index: no explicit bounds check on ordinary accesses.
    assert settings["memory_reservation"] == MEMORY_RESERVATION == 4 * 1024**3
    assert settings["memory_guard_size"] == MEMORY_GUARD > 0
    config = EngineConfig().to_wasmtime()  # both setters exist in wasmtime-py
    assert isinstance(config, wasmtime.Config)


def test_each_pool_slot_reserves_the_whole_shape() -> None:
    # A pool slot smaller than 4 GiB + guard would make wasmtime compile a bounds check
    # into every load and store (1.2-1.3x on SHA-256 and quicksort).
    slots = 4
    before = vm_size()
    engine = FastEngine(EngineConfig(fuel=False), max_instances=slots, max_memory=1 << 20)
    try:
        grown = vm_size() - before
    finally:
        engine.close()
    assert grown >= slots * (4 * 1024**3 + MEMORY_GUARD)


def test_a_read_inside_memory_succeeds(fast: FastEngine) -> None:
    result = fast.compile(reader(*INSIDE), "inside.wasm").run()
    assert result.outcome is Outcome.EXITED and result.exit_code == 0


@pytest.mark.parametrize("where", sorted(REACHES))
def test_a_read_past_memory_traps_on_the_fast_path(fast: FastEngine, where: str) -> None:
    result = fast.compile(reader(*REACHES[where]), f"{where}.wasm").run(timeout_s=10)
    assert result.outcome is Outcome.TRAP, (where, result.message)
    assert (FAULT in result.message) == (where in UNCHECKED), result.message


@pytest.mark.parametrize("where", sorted(REACHES))
def test_a_read_past_memory_traps_on_the_standard_engine(where: str) -> None:
    engine = wasmtime.Engine(EngineConfig(fuel=False).to_wasmtime())
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 40)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, reader(*REACHES[where])), [])
    start = instance.exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    with pytest.raises(wasmtime.Trap, match="out of bounds") as trapped:
        start(store)
    assert (FAULT in str(trapped.value)) == (where in UNCHECKED), str(trapped.value)

"""The forwarding trampoline is compiled per engine and kept only as long as its engine:
an engine freed and a new one made at the same address (the same `id`) never receives
the trampoline of the dead one."""

from __future__ import annotations

import gc

import wasmtime

from stockade.hostcalls.interpose import _trampoline_module


def _instantiates(engine: wasmtime.Engine, module: wasmtime.Module) -> bool:
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.define(store, "env", "memory",
                  wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None))))
    try:
        linker.instantiate(store, module)
    except wasmtime.WasmtimeError:
        return False
    return True


def test_a_new_engine_never_gets_a_dead_engines_trampoline() -> None:
    seen: set[int] = set()
    reused = 0
    for _ in range(60):
        engine = wasmtime.Engine()
        reused += id(engine) in seen
        seen.add(id(engine))
        assert _instantiates(engine, _trampoline_module(engine))
        del engine
        gc.collect()
        if reused >= 3:
            break
    assert reused, "no engine address was reused: the attack did not happen"

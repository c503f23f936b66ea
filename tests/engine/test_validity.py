"""`engine.validity`: one validation through the C API, answering for the engine asked."""

from __future__ import annotations

import pytest

from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine, wat2wasm
from stockade.engine.validity import engine_verdict, needs_gc
from stockade.errors import ModuleError

GC_MODULE = wat2wasm("(module (func (param anyref)))")
SHARED_MEMORY = wat2wasm("(module (memory 1 1 shared))")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_module_is_validated(kind: type) -> None:
    # ctypes takes bytes only: a bytearray raised ArgumentError (found by review).
    data = kind(GC_MODULE)
    assert engine_verdict(data) == (True, None)  # type: ignore[arg-type]
    assert needs_gc(data)  # type: ignore[arg-type]


def test_a_refusal_for_another_proposal_does_not_name_gc() -> None:
    """A pulley engine refuses shared memory for want of threads; asking the default
    engine whether GC would help said yes, and the hint named `--wasm-gc`."""
    with FastEngine(EngineConfig(strategy="pulley"), max_instances=1) as engine:
        with pytest.raises(ModuleError) as refused:
            engine.validate(SHARED_MEMORY, "shared.wasm")
        assert "threads" in refused.value.message and "wasm-gc" not in refused.value.message
        with pytest.raises(ModuleError) as gc_refused:
            engine.validate(GC_MODULE, "gc.wasm")
        assert "--wasm-gc" in gc_refused.value.message
    assert not needs_gc(SHARED_MEMORY, EngineConfig(strategy="pulley"))

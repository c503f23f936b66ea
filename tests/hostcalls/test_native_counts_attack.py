"""The unmetered C-API run counts its served calls natively (`_native.c` `calls[]`) so
that `usage.hostcalls` reads as the sandbox's. At the host-call budget the sandbox counts
the call it refused (101 of a budget of 100: `test_backends.test_hostcall_budget`); the
native counters must say the same, or a run reports different usage by backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.sandbox.capi import CapiSandbox, needs_meter
from tests.conftest import guest

_ENTROPY = """(module
  (import "wasi_snapshot_preview1" "random_get" (func $r (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (local.set $n (i32.const 20000))
    (loop $l (drop (call $r (i32.const 0) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))))"""


def _runs(module: Path, budget: int = 100) -> tuple[dict[str, int], dict[str, int]]:
    policy = Policy.from_profile("default").with_limits(
        max_hostcalls=budget, hostcall_caps=(), max_output=1024**3)
    with CapiSandbox(policy) as fast, Sandbox(policy) as standard:
        native = fast.run(module, Invocation())
        canonical = standard.run(module, Invocation())
        loaded = fast._load(module)  # the budget alone: served unmetered, natively counted
        assert loaded is not None and not needs_meter(policy, loaded[0])
    for result in (native, canonical):
        assert result.outcome is Outcome.HOSTCALL_LIMIT, (result.outcome, result.message)
    return native.usage.hostcalls, canonical.usage.hostcalls


@pytest.mark.parametrize("name", ["flood.wasm", "entropy.wat"])
def test_native_counts_at_the_budget_match_the_sandbox(tmp_path: Path, name: str) -> None:
    if name.endswith(".wat"):
        module = tmp_path / name
        module.write_text(_ENTROPY)
    else:
        module = guest(name)
    native, canonical = _runs(module)
    assert native == canonical


@pytest.mark.parametrize("budget", [0, 1])
@pytest.mark.parametrize("name", ["flood.wasm", "entropy.wat"])
def test_native_counts_at_the_smallest_budgets_match_the_sandbox(
        tmp_path: Path, name: str, budget: int) -> None:
    """The very first call refused (a budget of 0) or the second (1): the counter the
    refused call lands in is the sandbox's too, and it is counted once."""
    if name.endswith(".wat"):
        module = tmp_path / name
        module.write_text(_ENTROPY)
    else:
        module = guest(name)
    native, canonical = _runs(module, budget)
    assert native == canonical
    assert sum(native.values()) == budget + 1, native


def test_the_native_library_refuses_a_caller_built_for_another_layout() -> None:
    """`stockade_fast_init` takes the caller's function table only when every field of
    every structure it shares sits where its own does, and each has its size: one
    field moved (into padding, or swapped with another of the same size, which sizes
    alone let through) is refused before the table is copied."""
    import ctypes

    from stockade.engine.fastpath import _native

    if _native._LIBRARY is None:
        pytest.skip("the fast path's native library is not built here")
    init = _native._LIBRARY.stockade_fast_init
    table = (ctypes.c_void_p * (len(_native._FUNCTIONS) + 1))()
    count = len(_native._FUNCTIONS)
    layout = list(_native.LAYOUT)

    def accepted(entries: list[int], functions: int = count) -> bool:
        return init(table, functions, 0, (ctypes.c_size_t * len(entries))(*entries),
                    len(entries)) == 0

    # RunOut's `called` and `status`, two int32 side by side, swapped: the same size.
    fields = [name for name, *_ in _native.RunOut._fields_]
    start = sum(len(struct._fields_) + 1  # RunOut's entries follow these three's
                for struct in (_native.RunState, _native.RunPlanC, _native.RunIn))
    called = start + fields.index("called")
    assert fields[fields.index("called") + 1] == "status"
    assert layout[called] == _native.RunOut.called.offset
    swapped = [*layout]
    swapped[called], swapped[called + 1] = layout[called + 1], layout[called]
    assert not accepted(swapped)
    for index in range(len(layout)):  # any one entry off by a field's width
        for delta in (4, -4, 8):
            moved = [*layout]
            moved[index] += delta
            assert not accepted(moved), index
    assert not accepted(layout[:-1])  # a structure left out
    assert not accepted([*layout, 8])
    assert not accepted(layout, count + 1) and not accepted(layout, count - 1)
    # Its own layout is taken: the library was loaded with it (a call here would copy
    # this test's empty table over the loaded one).
    assert _native.LAYOUT == tuple(layout)

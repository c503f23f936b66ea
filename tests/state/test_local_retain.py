"""`LocalState.retain`: the quota cells of names no route uses are released (each held
two descriptors for the worker's life, whatever reloads dropped them: found by review),
but not under a request still holding a lease from the routes a reload replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.state import GateSpec, LocalState, Quota, QuotaExceeded, StateError


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_retain_closes_the_cells_of_dropped_names(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "quotas")
    before = descriptors()
    for i in range(20):
        state.gate(GateSpec(f"f{i}", "t", Quota(concurrency=1), Quota()))
    assert descriptors() == before + 2 * 21
    assert state.descriptors({"function:f0", "function:x"}) == 2 * 22
    state.retain({"function:f0", "tenant:t"})
    assert descriptors() == before + 2 * 2
    state.retain(())
    assert descriptors() == before
    state.close()


def test_a_lease_held_across_retain_is_given_back_then_closed(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "quotas")
    before = descriptors()
    gate = state.gate(GateSpec("f", "t", Quota(concurrency=1), Quota(concurrency=1)))
    lease = gate.admit()
    state.retain(())  # a reload dropped f: its request still runs
    assert descriptors() == before + 4
    lease.release(0.5)
    assert descriptors() == before
    # A request routed before the swap, admitted after it, is refused (503): admitted
    # uncounted, such requests held open across a reload and back ran past the new
    # limiter's `concurrency = 1` (found by review).
    with pytest.raises(StateError, match="reloaded"):
        gate.admit()
    state.close()


def test_a_name_back_before_its_leases_end_keeps_their_count(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "quotas")
    spec = GateSpec("f", "t", Quota(concurrency=1), Quota())
    lease = state.gate(spec).admit()
    state.retain(())
    again = state.gate(spec)  # the next reload names f again
    with pytest.raises(QuotaExceeded):
        again.admit()  # the old route's request still holds f's one slot
    lease.release(0.0)
    again.admit().release(0.0)
    state.close()


def test_memory_cells_hold_no_descriptors() -> None:
    state = LocalState()
    state.gate(GateSpec("f", "t", Quota(concurrency=1), Quota()))
    assert state.descriptors({"function:g"}) == 0
    state.retain(())
    state.close()

"""Verdicts on measured numbers: stated bounds from the policy, and who stopped the run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stockade.attacks import Impact, Verdict, bounds_for, judge
from stockade.attacks.baseline import WATCHDOG_OUTCOME
from stockade.attacks.modules import unloadable
from stockade.attacks.verdict import MAX_FLUSHES
from stockade.policy import Policy
from tests.conftest import GUESTS

MiB = 1024**2


def quiet(**changes: object) -> Impact:
    """A run that cost nothing, with some figures changed."""
    impact = Impact(
        wall_s=1.0, cpu_user_s=0.5, cpu_sys_s=0.1, machine_user_s=0.6, machine_system_s=0.2,
        machine_iowait_s=0.0, machine_irq_s=0.0, kernel_threads_s=0.1, device="vda",
        device_writes=3, device_write_bytes=12288, device_flushes=2, rss_growth_bytes=4 * MiB,
        rss_peak_bytes=64 * MiB, fds_held=1, inodes_created=0, bytes_created=0,
        bytes_allocated=0, symlinks_created=0, tree_depth=0, output_bytes=10, breach=None,
        breach_to_containment_ms=None, deadline_overrun_ms=None,
    )
    return replace(impact, **changes)  # type: ignore[arg-type]


def test_bounds_come_from_the_policy_with_ten_percent_slack() -> None:
    strict = bounds_for(Policy.from_profile("strict").with_limits(timeout=5.0))
    assert strict.wall_s == pytest.approx(5.0 * 1.1 + 1.0)
    assert strict.output_bytes == int(1 * MiB * 1.1)
    assert strict.bytes_created == 4096 and strict.inodes_created == 1
    assert strict.fds_held == int(32 * 1.1) + 8
    assert strict.device_flushes == MAX_FLUSHES
    default = bounds_for(Policy.from_profile("default"))
    assert default.bytes_created == int(64 * MiB * 1.1) + 4096
    assert default.inodes_created == 1101
    unbounded = bounds_for(Policy.from_profile("permissive").with_limits(timeout=None))
    assert unbounded.wall_s is None


def test_within_every_bound_is_contained() -> None:
    bounds = bounds_for(Policy.from_profile("strict"))
    assert judge(quiet(), bounds, "timeout") == (Verdict.CONTAINED, ())
    assert judge(quiet(), bounds, "exited") == (Verdict.CONTAINED, ())


def test_a_crossed_bound_is_degraded_when_a_limit_stopped_the_guest() -> None:
    bounds = bounds_for(Policy.from_profile("strict"))
    verdict, reasons = judge(quiet(device_flushes=201), bounds, "hostcall_limit")
    assert verdict is Verdict.DEGRADED
    assert reasons == ("device flushes 201 > 200",)


def test_a_crossed_bound_is_escaped_when_nothing_stopped_the_guest() -> None:
    bounds = bounds_for(Policy.from_profile("strict"))
    verdict, reasons = judge(quiet(device_flushes=20_000, device_write_bytes=100 * MiB),
                             bounds, "exited")
    assert verdict is Verdict.ESCAPED
    assert reasons[0] == "device flushes 2e+04 > 200"
    assert reasons[1].startswith("device writes 100MiB >")


def test_the_watchdog_having_to_kill_is_an_escape() -> None:
    bounds = bounds_for(Policy.from_profile("default"))
    verdict, reasons = judge(quiet(wall_s=3.0), bounds, WATCHDOG_OUTCOME)
    assert verdict is Verdict.ESCAPED
    assert "outer watchdog" in reasons[0]


def test_forbidden_actions_escape_whatever_the_numbers() -> None:
    bounds = bounds_for(Policy.from_profile("default"))
    impact = quiet(guest_breaches=("opened /dev/ptmx", "opened /dev/ptmx"))
    verdict, reasons = judge(impact, bounds, "exited")
    assert verdict is Verdict.ESCAPED
    assert reasons == ("guest reports 2 forbidden actions that worked: opened /dev/ptmx (x2)",)
    verdict, reasons = judge(quiet(outside_scratch=("made_outside",)), bounds, "timeout")
    assert verdict is Verdict.ESCAPED and "made_outside" in reasons[0]


def test_time_memory_and_kernel_bounds() -> None:
    bounds = bounds_for(Policy.from_profile("strict").with_limits(timeout=2.0))
    assert judge(quiet(wall_s=3.19), bounds, "timeout")[0] is Verdict.CONTAINED
    assert judge(quiet(wall_s=3.3), bounds, "timeout")[0] is Verdict.DEGRADED
    grown = quiet(rss_growth_bytes=300 * MiB)
    assert judge(grown, bounds, "exited")[1][0].startswith("memory growth 300MiB")
    # CPU of the kernel's own threads: 1 s + a quarter of the wall time
    assert judge(quiet(kernel_threads_s=1.2), bounds, "exited")[0] is Verdict.CONTAINED
    assert judge(quiet(kernel_threads_s=1.3), bounds, "exited")[0] is Verdict.ESCAPED


def test_impact_serialises_to_json_types() -> None:
    data = quiet(guest_breaches=("x",), wall_s=1.23456789).as_dict()
    assert data["wall_s"] == 1.234568
    assert data["guest_breaches"] == ["x"]
    assert data["device_flushes"] == 2


def test_a_guest_that_cannot_be_loaded_is_an_error_whatever_the_numbers() -> None:
    bounds = bounds_for(Policy.from_profile("default"))
    for outcome in ("refused", "error"):
        verdict, reasons = judge(quiet(), bounds, outcome,
                                 unloadable="m.wasm: invalid WebAssembly: unexpected end")
        assert verdict is Verdict.ERROR
        assert reasons == ("never ran: its guest cannot be loaded under any policy: "
                           "m.wasm: invalid WebAssembly: unexpected end",)
    # refused by the policy (a valid module): judged on its numbers, as before
    assert judge(quiet(), bounds, "refused") == (Verdict.CONTAINED, ())


def test_unloadable_names_only_modules_wasmtime_would_not_load(tmp_path: Path) -> None:
    whole = (GUESTS / "attacks" / "cpu_loop.wasm").read_bytes()
    cut = tmp_path / "cut.wasm"
    cut.write_bytes(whole[:100])
    why = unloadable(cut)
    assert why is not None
    assert why.startswith("cut.wasm: invalid WebAssembly: unexpected end-of-file")
    text = tmp_path / "text.wasm"
    text.write_text("hello")
    assert unloadable(text) == "text.wasm: not a WebAssembly binary (no \\0asm header)"
    assert unloadable(GUESTS / "attacks" / "cpu_loop.wasm") is None
    assert unloadable(GUESTS / "attacks" / "threads.wasm") is None  # denied, but valid
    # Valid with nothing to run: refused by every sandbox, it passed as contained.
    empty = tmp_path / "empty.wasm"
    empty.write_bytes(b"\0asm\x01\0\0\0")
    assert unloadable(empty) == "empty.wasm: no _start function export (not a WASI command)"

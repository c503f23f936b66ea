"""The gateway's ratio to its server's ceiling: a real short measurement (real uvicorn,
real `stockade serve`, real wrk), and how `stockade bench` records and reports it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.bench.backends import Context, catalogue
from stockade.bench.claims import gateway_row, goal_rows
from stockade.bench.gatewayload import (
    GOAL_RATIO,
    Pinning,
    measure_ratios,
    missing,
    tree_cpu_seconds,
)
from stockade.bench.hosts.base import Layout
from stockade.bench.plan import NO_GATEWAY, PLANS
from stockade.bench.report import render_report
from stockade.bench.results import BenchResults
from stockade.bench.runner import GATEWAY, _gateway, _select
from stockade.bench.stats import BenchError

from ..conftest import ROOT

FUNCTIONS = ROOT / "build" / "guests" / "functions"


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def begin(self, total: int) -> None:
        pass

    def advance(self, description: str, steps: int) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture(scope="module")
def measured() -> dict[str, object]:
    reason = missing(FUNCTIONS)
    if reason is not None:
        pytest.fail(reason)  # wrk and the guests are part of the project's set-up
    return measure_ratios(FUNCTIONS, rounds=3, seconds=1)


def test_ratios_are_paired_per_round_for_both_modes(measured: dict[str, object]) -> None:
    rounds = measured["rounds"]
    assert isinstance(rounds, list) and len(rounds) == 3
    ratios = measured["ratios"]
    assert isinstance(ratios, dict)
    for mode in ("off", "default"):
        # Each ratio is that round's gateway figure over the same round's raw figure.
        expected = [row[mode]["requests_per_s"] / row["raw"]["requests_per_s"]
                    for row in rounds]
        assert ratios[mode] == pytest.approx(expected)
        assert sorted(expected)[1] == pytest.approx(measured["ratio"][mode])  # type: ignore[index]
        assert all(row[mode]["requests"] > 0 for row in rounds)
    assert measured["errors"] == {"raw": 0, "off": 0, "default": 0}


def test_cpu_per_request_is_measured_for_every_server(measured: dict[str, object]) -> None:
    import statistics

    cpu = measured["cpu_us_per_request"]
    assert isinstance(cpu, dict) and set(cpu) == {"raw", "off", "default"}
    # Every server's CPU was read from /proc: some CPU for its requests (a round where a
    # starved server stayed below the clock tick is left out, not counted as zero).
    assert all(value is None or value > 0 for value in cpu.values())
    for mode in ("off", "default"):
        ratios = [row["raw"]["cpu_us_per_request"] / row[mode]["cpu_us_per_request"]
                  for row in measured["rounds"]  # type: ignore[attr-defined]
                  if row["raw"]["cpu_us_per_request"] and row[mode]["cpu_us_per_request"]]
        assert measured["cpu_ratios"][mode] == pytest.approx(ratios)  # type: ignore[index]
        if ratios:
            assert measured["cpu_ratio"][mode] == pytest.approx(  # type: ignore[index]
                statistics.median(ratios))


def test_tree_cpu_counts_children(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A parent that waits on a child burning CPU: the tree's time is mostly the child's.
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < "
            "end: pass\\nimport time; time.sleep(5)'])")
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        import time

        deadline = time.monotonic() + 20
        while tree_cpu_seconds(process.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_cpu_seconds(process.pid) >= 0.25
    finally:
        process.kill()
        process.wait()


def test_a_measured_run_reports_the_goal_row(measured: dict[str, object]) -> None:
    results = BenchResults(meta={}, backends=[], workloads=[], gateway=measured)
    row = gateway_row(results)
    default = measured["ratio"]["default"]  # type: ignore[index]
    cpu = measured["cpu_ratio"]["default"]  # type: ignore[index]
    assert row.value.startswith(f"{default:.2f}")
    assert "telemetry off" in row.value
    assert cpu is None or f"CPU: {cpu:.2f}" in row.value
    lower = default if cpu is None else min(default, cpu)
    assert row.verdict == ("met" if lower >= GOAL_RATIO else "missed")
    assert row in goal_rows(results)


def test_the_section_round_trips_through_results_json(tmp_path: Path) -> None:
    results = BenchResults(meta={}, backends=[], workloads=[],
                           gateway={"ratio": {"default": 0.5, "off": 0.6}, "rounds_n": 4})
    results.save(tmp_path / "results.json")
    loaded = BenchResults.load(tmp_path / "results.json")
    assert loaded.gateway == results.gateway
    assert gateway_row(loaded).verdict == "met"
    assert "| 0.50 (telemetry off: 0.60) | met |" in render_report(loaded)
    # The lower figure decides: a flattering throughput ratio does not meet the goal
    # when the servers' CPU per request says otherwise.
    loaded.gateway["cpu_ratio"] = {"default": 0.2, "off": 0.25}
    row = gateway_row(loaded)
    assert row.value.endswith("CPU: 0.20 (off: 0.25)") and row.verdict == "missed"


def test_quick_plan_skips_with_its_reason(tmp_path: Path) -> None:
    notes = _Notes()
    layout = Layout.under(ROOT / "build")
    assert PLANS["quick"].gateway is None and PLANS["full"].gateway is not None
    skipped = _gateway(PLANS["quick"], (), layout, notes)
    assert skipped == {"skipped": NO_GATEWAY}
    row = gateway_row(BenchResults(meta={}, backends=[], workloads=[], gateway=skipped))
    assert row.verdict == "not measured" and NO_GATEWAY in row.measured
    assert _gateway(PLANS["full"], ("stockade",), layout, notes)["skipped"].startswith(
        "not among --only")


def test_missing_function_guest_is_a_skip_reason(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "guests" / "bench", tmp_path / "native", tmp_path / "real")
    skipped = _gateway(PLANS["full"], (GATEWAY,), layout, _Notes())
    assert "hello.wasm is missing" in str(skipped["skipped"])
    with pytest.raises(BenchError, match="hello.wasm is missing"):
        measure_ratios(tmp_path)


def test_only_gateway_runs_no_backend(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path, cache_dir=tmp_path / "cache", stockade="stockade",
                  node="node", node_script=tmp_path / "host.mjs", system_python="python3")
    backends = catalogue(ctx)
    assert _select(backends, (GATEWAY,)) == []
    assert {b.name for b in _select(backends, (GATEWAY, "stockade"))} == {"stockade", "native"}
    with pytest.raises(BenchError, match="gateway"):
        _select(backends, ("nonsense",))


def test_pinning_keeps_the_client_off_the_servers_cpus() -> None:
    pinning = Pinning.split()
    if not pinning.client:
        pytest.skip("one CPU, or no taskset: nothing to pin")
    assert not set(pinning.client) & set(pinning.servers)
    assert pinning.wrap(["wrk"], server=False)[:3] == ["taskset", "-c",
                                                       ",".join(map(str, pinning.client))]

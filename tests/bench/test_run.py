"""Tiny real runs of the harness: real agents, real guests, real wasmtime and Extism."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.bench import BenchResults, Plan, write_outputs
from stockade.bench.agents import AgentFailed, AgentHandle
from stockade.bench.backends import Backend, Context, catalogue, precheck
from stockade.bench.hosts.base import Layout, Sample
from stockade.bench.report import render_report
from stockade.bench.results import BackendInfo, Measurement
from stockade.bench.runner import Options, run_bench

from ..conftest import ROOT

TINY = Plan(
    name="tiny", rounds=2, warmup={"fast": 1, "spawn": 1, "slow": 0, "compile": 0},
    counts={"startup": {"fast": 6, "spawn": 2}, "compute": {"fast": 2, "spawn": 2},
            "real": {"fast": 1, "spawn": 1}},
    variants=("small",), interpreter_variants=("small",),
    groups=("startup", "compute", "real"),
)


class Recorder:
    """Collects progress events (the CLI draws them with rich)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.notes: list[str] = []

    def begin(self, total: int) -> None:
        self.total = total

    def advance(self, description: str, steps: int) -> None:
        self.done += steps

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchResults, Recorder]:
    work = tmp_path_factory.mktemp("bench")
    build = ROOT / "build"
    # No CPython module in this layout: the real workload must be skipped with a reason.
    layout = Layout(build / "guests" / "bench", build / "native" / "bench", work / "no-real")
    recorder = Recorder()
    options = Options(plan=TINY, layout=layout, workdir=work / "w",
                      only=("stockade", "wasmtime", "extism"))
    return run_bench(options, recorder), recorder


def test_every_backend_ran_and_checksums_agree(tiny_run: tuple[BenchResults, Recorder]) -> None:
    results, recorder = tiny_run
    assert [b.name for b in results.ran()] == ["native", "stockade", "wasmtime", "extism"]
    assert results.agreement() == {}
    hello = results.get("stockade", "startup/hello")
    assert hello is not None and hello.count == 6 and hello.failures == 0
    sieve = results.get("wasmtime", "compute/sieve/small")
    assert sieve is not None and sieve.count == 2 and sieve.p50("hot_ms") is not None
    native = results.get("native", "startup/hello")
    assert native is not None and native.p50("first_ms") is not None
    assert results.get("extism", "compute/sieve/small") is None  # hello only
    assert recorder.total > 0 and recorder.done == recorder.total
    assert results.artifacts["noop.wasm"] > 0 and "noop native binary" in results.artifacts


def test_missing_module_is_a_workload_skip_with_a_hint(
        tiny_run: tuple[BenchResults, Recorder]) -> None:
    results, _ = tiny_run
    assert "fetch_real_guests" in results.skipped_workloads["real/python"]
    assert results.workload("real/python") is None


def test_results_round_trip_and_report(tiny_run: tuple[BenchResults, Recorder],
                                       tmp_path: Path) -> None:
    results, _ = tiny_run
    written = write_outputs(results, tmp_path)
    assert {"results.json", "report.md", "latency_cdf.png"} <= set(written)
    for name in written:
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = BenchResults.load(tmp_path / "results.json")
    before = results.get("stockade", "startup/hello")
    after = again.get("stockade", "startup/hello")
    assert before is not None and after is not None
    assert before.summary() == after.summary()
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Summary", "## Paper claim vs this machine", "## Goals", "## Method",
                    "Stockade in-process", "Checksums: all backends agree"):
        assert heading in report
    assert "workload `real/python` skipped" in report


def test_skip_reasons(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path, cache_dir=tmp_path / "cache", stockade=None, node=None,
                  node_script=tmp_path / "host.mjs", system_python=None)
    reasons = {b.name: precheck(b) for b in catalogue(ctx)}
    assert "node is not installed" in str(reasons["node"])
    assert "stockade command" in str(reasons["stockade-run"])
    assert reasons["stockade"] is None
    bogus = Backend("bogus", "bogus", "no-such-host", "in-process", frozenset({"startup"}),
                    "fast")
    layout = Layout(tmp_path, tmp_path, tmp_path)
    agent = AgentHandle(bogus, layout, tmp_path / "bogus.log")
    with pytest.raises(AgentFailed, match="no host named"):
        agent.start()
    agent.close()


def test_checksum_mismatch_is_reported() -> None:
    results = BenchResults(
        meta={"plan": {"name": "synthetic", "counts": {}}},
        backends=[BackendInfo("native", "native process", "process"),
                  BackendInfo("stockade", "Stockade", "in-process")],
        workloads=[{"key": "startup/hello", "group": "startup", "label": "hello"}])
    for backend, digest in (("native", "aaaa"), ("stockade", "bbbb")):
        measurement = Measurement(backend, "startup/hello")
        measurement.add(Sample(wall_ms=1.0, digest=digest))
        results.measurements.append(measurement)
    assert results.agreement() == {"startup/hello": {"native": "aaaa", "stockade": "bbbb"}}
    assert "checksum mismatch" in render_report(results)

"""The charts, drawn from the committed results of a full benchmark run."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.bench.charts import CHARTS, _split_artifact, _styled, render_charts
from stockade.bench.results import BenchResults
from tests.conftest import ROOT

RUN = ROOT / "docs" / "benchmarks" / "2026-12-02" / "results.json"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results() -> BenchResults:
    return BenchResults.load(RUN)


def test_every_chart_is_drawn(results: BenchResults, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="charts are the optional stockade[bench] extra")
    written = render_charts(results, tmp_path)
    assert written == list(CHARTS)
    for name in written:
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_no_two_latency_series_look_alike(results: BenchResults) -> None:
    names = [info.name for info in results.ran()]
    assert len(names) >= 13
    styles = _styled(names)
    assert len(set(styles.values())) == len(names)


def test_artifacts_group_by_workload_with_one_colour_per_format(
        results: BenchResults) -> None:
    groups: dict[str, set[str]] = {}
    colours: dict[str, str] = {}
    for name in results.artifacts:
        workload, label, colour = _split_artifact(name)
        groups.setdefault(workload, set()).add(label)
        assert colours.setdefault(label, colour) == colour
    assert {"noop", "echo", "micro", "compute", "python"} <= set(groups)
    assert len(groups["noop"]) == 6  # wasm, AoT, cranelift, pulley, native, container layer
    workloads = set(groups) - {"platform (shared)"}
    assert workloads == {"noop", "echo", "micro", "compute", "python"}

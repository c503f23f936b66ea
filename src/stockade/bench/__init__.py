"""`stockade bench`: Lumos- and Edera-style benchmarks of Stockade against native
processes, containers, Node.js, Extism and wasmtime's interpreter, on this machine.

Pipeline: `plan` (what and how often) -> `runner` (agents per backend, round-robin)
-> `results` (data, results.json) -> `report` (Markdown) and `charts` (PNG).
"""

from __future__ import annotations

from .plan import PLANS, Plan, get_plan
from .results import BenchResults, Measurement
from .runner import Options, Progress, run_bench
from .stats import BenchError, Summary

__all__ = ["Plan", "PLANS", "get_plan", "Options", "Progress", "run_bench", "BenchResults",
           "Measurement", "BenchError", "Summary", "write_outputs"]


def write_outputs(results: BenchResults, out: object) -> list[str]:
    """Write results.json, the PNG charts and report.md into directory `out`; returns the
    names of the files written."""
    from pathlib import Path

    from .charts import render_charts
    from .report import render_report

    directory = Path(str(out))
    directory.mkdir(parents=True, exist_ok=True)
    results.save(directory / "results.json")
    charts = render_charts(results, directory)
    (directory / "report.md").write_text(render_report(results, charts))
    return ["results.json", *charts, "report.md"]

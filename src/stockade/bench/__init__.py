"""`stockade bench`: Lumos- and Edera-style benchmarks of Stockade against native
processes, containers, Node.js, Extism and wasmtime's interpreter, on this machine.

Pipeline: `plan` (what and how often) -> `runner` (agents per backend, round-robin)
-> `results` (data, results.json) -> `report` (Markdown) and `charts` (PNG).
"""

from __future__ import annotations

from .charts import CHARTS
from .plan import PLANS, Plan, get_plan
from .results import BenchResults, Measurement
from .runner import Options, Progress, run_bench
from .stats import BenchError, Summary

__all__ = ["Plan", "PLANS", "get_plan", "Options", "Progress", "run_bench", "BenchResults",
           "Measurement", "BenchError", "Summary", "write_outputs", "prepare_outputs",
           "OUTPUTS"]

# What `write_outputs` may write into its directory (the charts only with matplotlib).
OUTPUTS = ("results.json", "report.md", *CHARTS)


def prepare_outputs(out: object) -> None:
    """Make directory `out` (and its parents) and check, before a run, that the outputs can
    be written there: a file can be created in it, and nothing where an output goes is
    anything but a regular file (a link, a directory, a device). Raises OSError naming
    the path."""
    import errno
    import os
    import tempfile
    from pathlib import Path

    from ..regularfile import replaceable

    directory = Path(str(out))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file, a device (/dev/full), a link to nothing
        what = "a link to nothing" if directory.is_symlink() else "not a directory"
        raise NotADirectoryError(errno.ENOTDIR, f"exists and is {what}",
                                 str(directory)) from None
    for name in OUTPUTS:
        replaceable(directory / name)
    handle, probe = tempfile.mkstemp(prefix=".stockade-bench-", suffix=".probe",
                                     dir=directory)
    os.close(handle)
    os.unlink(probe)


def write_outputs(results: BenchResults, out: object) -> list[str]:
    """Write results.json, the PNG charts and report.md into directory `out`; returns the
    names of the files written. Each is written whole and never through a link planted
    where it goes (`regularfile.replace_file`); OSError for anything there but a regular
    file."""
    from pathlib import Path

    from ..regularfile import replace_file
    from .charts import render_charts
    from .report import render_report

    directory = Path(str(out))
    directory.mkdir(parents=True, exist_ok=True)
    results.save(directory / "results.json")
    charts = render_charts(results, directory)
    replace_file(directory / "report.md", render_report(results, charts).encode(), mode=None)
    return ["results.json", *charts, "report.md"]

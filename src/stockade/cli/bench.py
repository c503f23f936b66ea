"""`stockade bench`: run the benchmark suite and write results.json, report.md and charts.

rich and matplotlib are imported here and in the chart module only, so other commands
never pay for them.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import click

from ..rmtree import remove_tree

__all__ = ["bench"]


class _RichProgress:
    """Adapts the runner's progress events to a rich progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task = progress.add_task("starting backends", total=None)

    def begin(self, total: int) -> None:
        self.progress.update(self.task, total=total, description="measuring")

    def advance(self, description: str, steps: int) -> None:
        self.progress.update(self.task, advance=steps, description=description)

    def note(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{text}[/yellow]")


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


@click.command("bench")
@click.option("--quick", is_flag=True, help="Fewer sizes and samples (under 2 minutes).")
@click.option("--only", "only", multiple=True, metavar="BACKEND[,BACKEND]",
              help="Run only these backends (native is kept as the baseline); "
                   "`gateway`: the gateway's ratio to its server's ceiling.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Output directory (default: bench-results/<date>).")
@click.option("--build", "build", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Build directory with guests/bench, native/bench and real/ "
                   "[default: the installed package's, or the checkout's build/].")
@click.option("--keep-workdir", is_flag=True, help="Keep payloads, bundles and agent logs.")
def bench(quick: bool, only: tuple[str, ...], out: Path | None, build: Path | None,
          keep_workdir: bool) -> None:
    """Benchmark Stockade against native processes, containers, Node.js, Extism and
    wasmtime's interpreter on this machine, the same C guests on every backend.

    Writes results.json, report.md and PNG charts into --out.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..bench import Options, get_plan, run_bench, write_outputs
    from ..bench.hosts.base import Layout
    from ..bench.report import summary_table
    from ..errors import UsageError
    layout = Layout.under(build)
    if not layout.wasm("noop").exists() or not layout.native("noop").exists():
        raise UsageError(f"no benchmark guests under {layout.wasm_dir.parent.parent} "
                         "(run: python scripts/build_guests.py)")
    plan = get_plan("quick" if quick else "full")
    target = out or Path("bench-results") / date.today().isoformat()
    workdir = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    layout = layout.with_cached_python(workdir)
    console = Console(stderr=True)
    from ..bench.charts import NO_CHARTS, charts_available

    if not charts_available():
        console.print(f"[yellow]{NO_CHARTS}[/yellow]")
    columns = (SpinnerColumn(), TextColumn("{task.description}", style="cyan"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            results = run_bench(Options(plan=plan, layout=layout, workdir=workdir,
                                        only=_split(only)), _RichProgress(progress))
        written = write_outputs(results, target)
    finally:
        if keep_workdir:
            console.print(f"work directory kept: {workdir}")
        else:
            failure = remove_tree(workdir)
            if failure is not None:
                console.print(f"could not remove the work directory: {failure}")
    click.echo(summary_table(results))
    console.print(f"wrote {', '.join(written)} to {target}")

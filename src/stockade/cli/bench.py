"""`stockade bench`: run the benchmark suite and write results.json, report.md and charts.

rich and matplotlib are imported here and in the chart module only, so other commands
never pay for them.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..rmtree import remove_tree
from .paths import PathParam

if TYPE_CHECKING:
    from ..bench.hosts.base import Layout
    from ..bench.plan import Plan

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
    """The backend names of the --only values; an empty value (`--only ''`, `--only ,`)
    is refused: it named nothing, and no names at all means every backend."""
    from ..errors import UsageError

    names = []
    for item in values:
        found = [v.strip() for v in item.split(",") if v.strip()]
        if not found:
            raise UsageError(f"--only {item!r} names no backend (give BACKEND[,BACKEND], "
                             "or leave --only out to run them all)")
        names += found
    return tuple(names)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout` sends): stops the run the way Ctrl-C does, cleanup
    included; the process group's agents get it too and clean up their own."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop: let the cleanup finish
    raise _Terminated


def _prepare(target: Path) -> None:
    """Check --out before measuring (a run's results were lost to an output directory
    refused at the end): created, writable, nothing but regular files where outputs go."""
    from ..bench import prepare_outputs
    from ..errors import UsageError

    try:
        prepare_outputs(target)
    except OSError as exc:
        where = "" if exc.filename in (None, str(target)) else f"{exc.filename}: "
        raise UsageError(f"--out {target}: cannot write the results there: {where}"
                         f"{exc.strerror or exc}") from None


def _rescue(results: Any, target: Path, failure: OSError) -> str:
    """results.json kept somewhere when --out refused it at the end: the message."""
    where = failure.filename if failure.filename is not None else target
    said = f"could not write the results to {target}: {where}: {failure.strerror or failure}"
    try:
        kept = Path(tempfile.mkdtemp(prefix="stockade-bench-results-")) / "results.json"
        results.save(kept)
    except OSError as exc:
        return f"{said}; nor keep them in a temporary directory ({exc.strerror or exc})"
    return f"{said}; results kept in {kept} (`stockade advise --results` reads it)"


@click.command("bench")
@click.option("--quick", is_flag=True, help="Fewer sizes and samples (under 2 minutes).")
@click.option("--only", "only", multiple=True, metavar="BACKEND[,BACKEND]",
              help="Run only these backends (native is kept as the baseline); "
                   "`gateway`: the gateway's ratio to its server's ceiling.")
@click.option("--out", "out", type=PathParam("directory"),
              default=None, help="Output directory (default: bench-results/<date>).")
@click.option("--build", "build", type=PathParam("directory"),
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
    from ..bench import get_plan
    from ..bench.hosts.base import Layout
    from ..bench.hosts.process import LAUNCHER
    from ..errors import UsageError

    selected = _split(only)
    layout = Layout.under(build)
    if not all(p.exists() for p in (layout.wasm("noop"), layout.native("noop"),
                                    layout.native(LAUNCHER))):
        raise UsageError(f"no benchmark guests under {layout.wasm_dir.parent.parent} "
                         "(run: python scripts/build_guests.py)")
    plan = get_plan("quick" if quick else "full")
    target = out or Path("bench-results") / date.today().isoformat()
    _prepare(target)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _bench(plan, layout, target, selected, keep_workdir)
    except _Terminated:
        sys.stderr.write("stockade: terminated\n")
        sys.exit(128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bench(plan: Plan, layout: Layout, target: Path, only: tuple[str, ...],
           keep_workdir: bool) -> None:
    """Measure into a work directory (removed after, Ctrl-C and SIGTERM included), write
    the outputs, print the summary."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..bench import Options, run_bench, write_outputs
    from ..bench.charts import NO_CHARTS, charts_available
    from ..bench.report import summary_table
    from ..bench.stats import BenchError

    console = Console(stderr=True)
    if not charts_available():
        console.print(f"[yellow]{NO_CHARTS}[/yellow]")
    columns = (SpinnerColumn(), TextColumn("{task.description}", style="cyan"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    workdir = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    try:
        layout = layout.with_cached_python(workdir)
        with Progress(*columns, console=console, transient=False) as progress:
            results = run_bench(Options(plan=plan, layout=layout, workdir=workdir,
                                        only=only), _RichProgress(progress))
        try:
            written = write_outputs(results, target)
        except OSError as exc:
            click.echo(summary_table(results))
            raise BenchError(_rescue(results, target, exc)) from None
    finally:
        if keep_workdir:
            console.print(f"work directory kept: {workdir}")
        else:
            failure = remove_tree(workdir)
            if failure is not None:
                console.print(f"could not remove the work directory: {failure}")
    click.echo(summary_table(results))
    console.print(f"wrote {', '.join(written)} to {target}")

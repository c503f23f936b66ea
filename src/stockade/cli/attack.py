"""`stockade attack`: run the attack suite and show what each attack cost the host."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .paths import PathParam

__all__ = ["attack"]


def _duration(value: str, option: str) -> float | None:
    from ..errors import UsageError
    from ..policy import parse_duration

    if value.lower() in ("none", "profile"):
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option} {value!r}: {exc}") from None


def _isolation(isolate: str | None, profile: str, baseline: bool) -> str:
    """The `--isolate` choice, defaulting as `stockade run` does when isolation exists."""
    if isolate is not None or baseline:
        return isolate or "none"
    import importlib

    from ..policy import Policy

    try:
        module = importlib.import_module("..isolate", __package__)
    except ImportError:
        return "none"
    mode: str = module.default_isolation(Policy.from_profile(profile))
    return mode


@click.command("attack")
@click.option("--profile", default="default", show_default=True, metavar="PROFILE",
              help="Policy the attacks run under (strict, default, permissive).")
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only this attack (repeatable, or comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
@click.option("--baseline", is_flag=True,
              help="Run under plain wasmtime defaults (no limits) with an outer watchdog.")
@click.option("--isolate", type=click.Choice(["process", "none"]), default=None,
              help="Run each attack in an isolated worker process or in this process "
                   "[default: process for strict, else none].")
@click.option("--keep-scratch", is_flag=True, help="Keep each attack's run directory.")
@click.option("--timeout", "timeout", default="5s", show_default=True, metavar="DURATION",
              help="Cap on the profile's timeout so the suite ends in minutes; "
                   "'none' keeps the profile's.")
@click.option("--watchdog", default="3s", show_default=True, metavar="DURATION",
              help="Outer limit of each --baseline run (SIGKILL).")
@click.option("--guests", type=PathParam("directory"), default=None,
              help="Directory of built guest modules (scripts/build_guests.py) "
                   "[default: the installed package's, or the checkout's build/guests].")
@click.option("--list", "list_only", is_flag=True, help="List the attacks and exit.")
# The chart's place is checked by the command (`_check_chart`): links and devices too.
@click.option("--chart", type=PathParam("any", "chart file"), default=None,
              metavar="PNG", help="Also write a chart of this run (or of the --from reports): "
                                  ".png, .svg or .pdf.")
@click.option("--from", "reports", multiple=True, metavar="REPORT.json",
              type=PathParam("file", "report file"),
              help="With --chart: chart these `--json` reports side by side (e.g. strict, "
                   "default, --baseline) instead of running the suite.")
def attack(profile: str, only: tuple[str, ...], as_json: bool, baseline: bool,
           isolate: str | None, keep_scratch: bool, timeout: str, watchdog: str,
           guests: Path | None, list_only: bool, chart: Path | None,
           reports: tuple[Path, ...]) -> None:
    """Run the attack suite: each hostile module in a fresh sandbox, its host impact
    measured from outside (CPU, kernel time, device flushes and writes, memory,
    descriptors, files, output) and judged contained, degraded or escaped (or error:
    its guest cannot be loaded at all, so it never ran).

    Exits 0 only when every attack is contained, 1 otherwise.
    """
    from ..attacks import AttackRun, AttackRunner, RunnerOptions, find_attacks
    from ..attacks.report import all_contained, report_dict

    if chart is not None:
        _check_chart(chart)  # before the suite runs, not minutes later
    if reports:
        _chart_reports(reports, chart, as_json)
        return
    names = tuple(name.strip() for item in only for name in item.split(",") if name.strip())
    attacks = find_attacks(names)
    if list_only:
        for item in attacks:
            click.echo(f"{item.name:<16} {item.source:<5} {item.strategy:<28} {item.summary}")
        return
    watchdog_s = _duration(watchdog, "--watchdog") or 3.0
    mode = _isolation(isolate, profile, baseline)
    options = RunnerOptions(profile=profile, isolate=mode, baseline=baseline,
                            keep_scratch=keep_scratch, guests=guests,
                            timeout=_duration(timeout, "--timeout"), watchdog=watchdog_s)
    runner = AttackRunner(options)

    def progress(run: AttackRun) -> None:
        click.echo(f"  {run.attack.name:<16} {run.outcome:<15} {run.verdict.value}", err=True)

    runs = runner.run_all(attacks, None if as_json else progress)
    report = report_dict(runs, profile=profile, mode=runner.mode, isolate=mode,
                         timeout=runner.policy.limits.timeout, bounds=runner.bounds)
    if chart is not None:
        _render_chart([report], chart)
    if as_json:
        click.echo(json.dumps(report))
    else:
        from rich.console import Console

        from ..attacks.report import render_table

        limit = runner.policy.limits.timeout
        where = "plain wasmtime defaults" if baseline else f"isolate={mode}"
        title = (f"stockade attack — {runner.mode}, profile {profile} "
                 f"(timeout {limit:g} s), {where}" if limit else
                 f"stockade attack — {runner.mode}, profile {profile}, {where}")
        # a pipe gets the full table rather than 80 squeezed columns
        render_table(runs, Console(width=None if sys.stdout.isatty() else 170), title=title,
                     bounds=runner.bounds)
    if not all_contained(runs):
        sys.exit(1)


# A saved report of the whole suite is some 40 KiB: this bounds what a --from reads.
MAX_REPORT_BYTES = 4 * 1024**2


def _chart_reports(paths: tuple[Path, ...], chart: Path | None, as_json: bool) -> None:
    """`--from`: chart saved reports without running anything."""
    from ..bench.attackchart import check_report
    from ..errors import UsageError
    from ..regularfile import read_regular

    if chart is None:
        raise UsageError("--from needs --chart PNG (where to write the chart)")
    loaded = []
    for path in paths:
        try:  # a regular file (no FIFO to block on, no device), read to a bound
            text = read_regular(path, MAX_REPORT_BYTES + 1, follow=True)
        except OSError as exc:
            raise UsageError(f"--from {path}: cannot read: {exc.strerror}") from None
        if len(text) > MAX_REPORT_BYTES:
            raise UsageError(f"--from {path}: larger than {MAX_REPORT_BYTES // 1024**2} MiB, "
                             "not a `stockade attack --json` report")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # nested too deep: RecursionError
            reason = exc if isinstance(exc, ValueError) else "nested too deep"
            raise UsageError(f"--from {path}: not a JSON report: {reason}") from None
        try:
            check_report(data)
        except ValueError as exc:
            raise UsageError(f"--from {path}: not a `stockade attack --json` report: "
                             f"{exc}") from None
        loaded.append(data)
    if not _render_chart(loaded, chart):
        raise UsageError("--from: the reports hold no attack")
    if as_json:
        click.echo(json.dumps({"chart": str(chart), "reports": [str(p) for p in paths]}))
    else:
        click.echo(f"wrote {chart}")


def _check_chart(chart: Path) -> None:
    """Refuse a --chart that could not be written (UsageError): a format matplotlib's
    own backends do not write, matplotlib missing, or a link, a device or a directory
    in its place (`replace_file` would refuse it after the work)."""
    from ..bench.attackchart import chart_format
    from ..bench.charts import NO_CHARTS, charts_available
    from ..errors import UsageError
    from ..regularfile import replaceable

    try:
        chart_format(chart)
    except ValueError as exc:
        raise UsageError(f"--chart {chart}: {exc}") from None
    if not charts_available():
        raise UsageError(f"--chart: {NO_CHARTS}")
    try:
        replaceable(chart)
    except OSError as exc:
        raise UsageError(f"--chart {chart}: cannot write: {exc.strerror}") from None


def _render_chart(reports: list[dict[str, Any]], chart: Path) -> bool:
    """`render_attack_chart`, its refusals one line (UsageError)."""
    from ..bench.attackchart import render_attack_chart
    from ..errors import UsageError

    try:
        return render_attack_chart(reports, chart)
    except ValueError as exc:
        raise UsageError(f"--chart {chart}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--chart {chart}: cannot write: {exc.strerror}") from None

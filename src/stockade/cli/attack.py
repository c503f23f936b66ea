"""`stockade attack`: run the attack suite and show what each attack cost the host."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

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
@click.option("--guests", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of built guest modules (scripts/build_guests.py) "
                   "[default: the installed package's, or the checkout's build/guests].")
@click.option("--list", "list_only", is_flag=True, help="List the attacks and exit.")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="PNG", help="Also write a chart of this run (or of the --from reports).")
@click.option("--from", "reports", multiple=True, metavar="REPORT.json",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --chart: chart these `--json` reports side by side (e.g. strict, "
                   "default, --baseline) instead of running the suite.")
def attack(profile: str, only: tuple[str, ...], as_json: bool, baseline: bool,
           isolate: str | None, keep_scratch: bool, timeout: str, watchdog: str,
           guests: Path | None, list_only: bool, chart: Path | None,
           reports: tuple[Path, ...]) -> None:
    """Run the attack suite: each hostile module in a fresh sandbox, its host impact
    measured from outside (CPU, kernel time, device flushes and writes, memory,
    descriptors, files, output) and judged contained, degraded or escaped.

    Exits 0 only when every attack is contained, 1 otherwise.
    """
    from ..attacks import AttackRun, AttackRunner, RunnerOptions, find_attacks
    from ..attacks.report import all_contained, report_dict

    if reports:
        _chart_reports(reports, chart)
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
        from ..bench.attackchart import render_attack_chart

        render_attack_chart([report], chart)
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


def _chart_reports(paths: tuple[Path, ...], chart: Path | None) -> None:
    """`--from`: chart saved reports without running anything."""
    from ..bench.attackchart import render_attack_chart
    from ..errors import UsageError

    if chart is None:
        raise UsageError("--from needs --chart PNG (where to write the chart)")
    loaded = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--from {path}: not a JSON report: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("attacks"), list):
            raise UsageError(f"--from {path}: not a `stockade attack --json` report")
        loaded.append(data)
    if not render_attack_chart(loaded, chart):
        raise UsageError("--from: the reports hold no attack")
    click.echo(f"wrote {chart}")

"""`stockade telemetry show`: summarise the local OTLP-JSON telemetry file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError

__all__ = ["telemetry"]


@click.group("telemetry")
def telemetry() -> None:
    """Inspect the telemetry Stockade recorded locally (no OTLP endpoint configured)."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _shown(text: str) -> str:
    """`text` inside rich markup, shown as it is."""
    from rich.markup import escape

    return escape(text)


def _cell(text: str) -> Any:
    """A table cell of recorded text: escaped, never read as markup."""
    from rich.text import Text

    from ..display import printable

    return Text(printable(text))


@telemetry.command("show")
@click.option("--file", "path", type=click.Path(path_type=Path, dir_okay=False),
              help="Telemetry file (default: telemetry.jsonl in the state directory).")
@click.option("-n", "--last", default=10, show_default=True, type=click.IntRange(1),
              help="How many recent invocations to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def show(path: Path | None, last: int, as_json: bool) -> None:
    """Recent invocations, outcome counts, p50/p99 duration and violations.

    Counts come from the metrics (every invocation); the list and the percentiles come
    from the spans, which the export profile may sample.
    """
    from ..telemetry import read_summary, resolve_settings

    path = path or resolve_settings().file
    if not path.exists():
        click.echo(f"no telemetry at {path} yet: `stockade run` writes it when no OTLP "
                   "endpoint is configured")
        return
    try:
        summary = read_summary(path, recent=last)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if as_json:
        data: dict[str, Any] = {
            "file": str(path), "invocations": summary.invocations, "spans": summary.spans,
            "outcomes": dict(summary.outcomes), "violations": dict(summary.violations),
            "warnings": summary.warnings, "p50_ms": summary.p50_ms, "p99_ms": summary.p99_ms,
            "recent": [row.__dict__ for row in summary.recent],
        }
        click.echo(json.dumps(data))
        return
    from rich.console import Console
    from rich.table import Table

    from ..display import printable

    console = Console()
    console.print(
        f"[bold]{summary.invocations}[/] invocations in {_shown(printable(str(path)))} "
        f"({summary.spans} spans kept); duration p50 [bold]{_ms(summary.p50_ms)} ms[/], "
        f"p99 [bold]{_ms(summary.p99_ms)} ms[/]; monitor warnings: {summary.warnings}"
        + (f"; {summary.bad_lines} unreadable lines" if summary.bad_lines else ""))
    counts = Table(title="Outcomes")
    counts.add_column("outcome")
    counts.add_column("invocations", justify="right")
    counts.add_column("violations", justify="right")
    for outcome, count in summary.outcomes.most_common():
        counts.add_row(_cell(outcome), str(count), str(summary.violations.get(outcome, "")))
    console.print(counts)
    recent = Table(title=f"Last {len(summary.recent)} invocations")
    for column in ("time", "function", "outcome", "ms", "limit", "warn", "invocation"):
        # a narrow terminal squeezes the function name, nothing else
        recent.add_column(column, justify="right" if column in ("ms", "warn") else "left",
                          no_wrap=column != "function")
    for row in summary.recent:
        when = time.strftime("%H:%M:%S", time.localtime(row.start_ns / 1e9))
        style = "red" if row.outcome not in ("exited",) else None
        # Names and attributes come from the file, which guests' names reach: plain
        # text, control characters escaped, no rich markup.
        recent.add_row(when, _cell(row.name), _cell(row.outcome), f"{row.duration_ms:.2f}",
                       _cell(row.limit_hit), str(row.warnings or ""),
                       _cell(row.invocation_id[:8]), style=style)
    console.print(recent)

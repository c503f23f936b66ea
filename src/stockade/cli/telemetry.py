"""`stockade telemetry show`: summarise, filter and follow the local OTLP-JSON file."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from ..telemetry.reader import EXACT_LIMIT, MAX_RECENT
from .paths import PathParam

if TYPE_CHECKING:
    from ..telemetry.reader import Filters, InvocationRow, Rejection, Summary

__all__ = ["telemetry", "parse_since"]

FOLLOW_POLL = 0.5  # seconds between looks at the file in --follow


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


def parse_since(value: str, now: float | None = None) -> int:
    """`--since`: a duration back from now (`10m`, `2h`, `30s`) or an ISO 8601 time
    (`2026-12-02T04:00:00`, local time unless it says otherwise), as ns since the epoch.
    Raises UsageError."""
    from datetime import datetime

    from ..policy import parse_duration
    from ..policy.units import shown

    now = time.time() if now is None else now
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1e9)
        except ValueError:
            # Quoted short: a value of 5,000 digits was echoed whole.
            raise UsageError(f"--since {shown(value)}: give a duration like 10m or 2h, or "
                             "a time like 2026-12-02T04:00:00") from None
    if seconds is None or seconds < 0:
        raise UsageError(f"--since {shown(value)}: give a positive duration like 10m")
    return int((now - seconds) * 1e9)


@telemetry.command("show")
# `open_file` refuses what is not a file, in one line; an empty name is not `.`.
@click.option("--file", "path", type=PathParam("file", "telemetry file"),
              help="Telemetry file (default: telemetry.jsonl in the state directory).")
# Bounded: each row listed is held until the end (a huge one was a traceback).
@click.option("-n", "--last", default=10, show_default=True,
              type=click.IntRange(1, MAX_RECENT),
              help="How many recent invocations to list.")
@click.option("--function", help="Only invocations of this function (module file name "
                                 "for `stockade run`).")
@click.option("--tenant", help="Only invocations of this tenant.")
@click.option("--outcome", help="Only this outcome (exited, timeout, ...; `rejected` for "
                                "requests the gateway refused).")
@click.option("--since", "since", metavar="WHEN",
              help="Only since then: a duration back (10m, 2h) or an ISO 8601 time.")
@click.option("-f", "--follow", is_flag=True,
              help="Then print new invocations as they are recorded, until Ctrl+C.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (with --follow: then one per invocation, a line each).")
def show(path: Path | None, last: int, function: str | None, tenant: str | None,
         outcome: str | None, since: str | None, follow: bool, as_json: bool) -> None:
    """Recent invocations (full ids), outcome counts, p50/p99 duration, requests refused
    before a guest ran (kept out of the percentiles), and monitor warnings.

    Counts come from the metrics (every invocation) unless a filter is given; the list,
    the percentiles, warnings and filtered counts come from the spans, which the export
    profile may sample. Percentiles are exact up to 10,000 spans, then within 1 %.
    """
    from ..telemetry import resolve_settings
    from ..telemetry.reader import Filters, Summary, open_file, read_lines, summarise

    filters = Filters(function, tenant, outcome,
                      parse_since(since) if since is not None else None)
    path = path or resolve_settings().file
    offset = 0
    try:
        with open_file(path) as file:
            summary = summarise(read_lines(file), path, last, filters)
            offset = file.tell()
    except FileNotFoundError:
        if as_json and not follow:
            _render(Summary(path), as_json)  # one JSON object: an empty file's summary
            return
        if not follow:
            click.echo(f"no telemetry at {path} yet: `stockade run` writes it when no OTLP "
                       "endpoint is configured")
            return
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    else:
        _render(summary, as_json)
    if follow:
        _follow(path, offset, filters, as_json)


def _row_dict(row: InvocationRow | Rejection) -> dict[str, Any]:
    return {"kind": "rejection" if not hasattr(row, "invocation_id") else "invocation",
            **asdict(row)}


def _render(summary: Summary, as_json: bool) -> None:
    if as_json:
        data: dict[str, Any] = {
            "file": str(summary.path), "lines": summary.lines,
            "skipped_lines": summary.bad_lines, "invocations": summary.invocations,
            "spans": summary.spans, "outcomes": dict(summary.outcomes),
            "violations": dict(summary.violations), "warnings": summary.warnings,
            "p50_ms": summary.p50_ms, "p99_ms": summary.p99_ms,
            "percentile_error": summary.percentile_error,
            "rejections": dict(summary.rejections),
            "recent": [asdict(row) for row in summary.recent],
            "warned": [asdict(row) for row in summary.warned],
        }
        click.echo(json.dumps(data))
        return
    from rich.console import Console
    from rich.table import Table

    from ..display import printable

    # Full invocation ids are the point of the list: below 120 columns, lines wrap
    # rather than cut the ids.
    console = Console()
    console = Console(width=max(console.width, 120))
    rejected = sum(summary.rejections.values())
    console.print(
        f"[bold]{summary.invocations}[/] invocations in {_shown(printable(str(summary.path)))} "
        f"({summary.spans} spans kept); duration of those that ran: p50 "
        f"[bold]{_ms(summary.p50_ms)} ms[/], p99 [bold]{_ms(summary.p99_ms)} ms[/]"
        + (f" (each within {summary.percentile_error:.0%}: over {EXACT_LIMIT} spans)"
           if summary.percentile_error else "") + "; "
        f"refused before running: {rejected}; monitor warnings: {summary.warnings}"
        + (f"; [bold]{summary.bad_lines} lines skipped[/] (not OTLP/JSON as Stockade "
           "writes it)" if summary.bad_lines else ""))
    counts = Table(title="Outcomes")
    counts.add_column("outcome")
    counts.add_column("invocations", justify="right")
    counts.add_column("violations", justify="right")
    for outcome, count in summary.outcomes.most_common():
        counts.add_row(_cell(outcome), str(count), str(summary.violations.get(outcome, "")))
    console.print(counts)
    if summary.rejections:
        refusals = Table(title="Refused before a guest ran (not in the percentiles)")
        refusals.add_column("function")
        refusals.add_column("status / outcome")
        refusals.add_column("requests", justify="right")
        for key, count in summary.rejections.most_common():
            name, _, why = key.rpartition(" ")
            refusals.add_row(_cell(name), _cell(why), str(count))
        console.print(refusals)
    if summary.warned:
        warned = Table(title="Monitor warnings")
        for column in ("time", "function", "warning", "of limit", "invocation"):
            warned.add_column(column, no_wrap=column != "function")
        for row in summary.warned:
            for warning in row.warning_list:
                warned.add_row(_clock(row.start_ns), _cell(row.name), _cell(warning.kind),
                               f"{warning.ratio:.0%} ({warning.value:g} of {warning.limit:g})",
                               _cell(row.invocation_id))
        console.print(warned)
    recent = Table(title=f"Last {len(summary.recent)} invocations")
    tenants = any(row.tenant for row in summary.recent)
    columns = ["time", "function", *(["tenant"] if tenants else []), "outcome", "ms",
               "limit", "warn", "invocation"]
    for column in columns:
        # a narrow terminal squeezes the function name, nothing else
        recent.add_column(column, justify="right" if column in ("ms", "warn") else "left",
                          no_wrap=column != "function",
                          min_width=32 if column == "invocation" else None)
    for row in summary.recent:
        style = "red" if row.outcome not in ("exited",) else None
        # Names and attributes come from the file, which guests' names reach: plain
        # text, control characters escaped, no rich markup.
        cells = [_clock(row.start_ns), _cell(row.name),
                 *([_cell(row.tenant or "-")] if tenants else []), _cell(row.outcome),
                 f"{row.duration_ms:.2f}", _cell(row.limit_hit), str(row.warnings or ""),
                 _cell(row.invocation_id)]
        recent.add_row(*cells, style=style)
    console.print(recent)


def _clock(start_ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(start_ns / 1e9))


def _line(row: InvocationRow | Rejection) -> str:
    """One followed row as a line of plain, escaped text."""
    from ..display import printable

    if not hasattr(row, "invocation_id"):
        return printable(f"{_clock(row.start_ns)}  {row.name or '-'}  rejected "
                         f"{getattr(row, 'status', '?')}")
    invocation: InvocationRow = row  # type: ignore[assignment]
    warnings = "".join(f"  warning: {w.kind} at {w.ratio:.0%} of its limit"
                       for w in invocation.warning_list)
    tenant = f" [{invocation.tenant}]" if invocation.tenant else ""
    return printable(f"{_clock(row.start_ns)}  {invocation.name}{tenant}  "
                     f"{invocation.outcome}  {invocation.duration_ms:.2f} ms  "
                     f"{invocation.invocation_id}{warnings}")


def _follow(path: Path, offset: int, filters: Filters, as_json: bool) -> None:
    """Print rows appended to `path` from `offset` on, until interrupted. A file that
    shrinks (rotated, replaced) is read again from its start; a partial last line waits
    for its end. Read a chunk at a time: a huge append is never held whole."""
    from ..telemetry.reader import READ_CHUNK, LineSplitter, open_file, rows_of

    lines = LineSplitter()
    try:
        while True:
            try:
                file = open_file(path)
            except FileNotFoundError:
                file = None
            if file is not None:
                with file:
                    size = os.fstat(file.fileno()).st_size
                    if size < offset:
                        offset, lines = 0, LineSplitter()
                    file.seek(offset)
                    while offset < size:
                        chunk = file.read(min(READ_CHUNK, size - offset))
                        if not chunk:
                            break
                        offset += len(chunk)
                        for line in lines.feed(chunk):
                            _print_rows(rows_of(line) if line is not None else [], filters,
                                        as_json)
            time.sleep(FOLLOW_POLL)
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def _print_rows(rows: list[InvocationRow | Rejection], filters: Filters,
                as_json: bool) -> None:
    for row in rows:
        if filters.keeps(row):
            click.echo(json.dumps(_row_dict(row)) if as_json else _line(row))

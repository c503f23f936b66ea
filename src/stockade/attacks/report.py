"""Render a suite's runs: one JSON object, or a rich table for people.

`rich` is imported only by `render_table`, so the JSON path and the library never pay
for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .runner import AttackRun
from .verdict import KERNEL_BASE_S, KERNEL_PER_WALL, Bounds, Verdict

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["report_dict", "render_table", "describe_bounds", "all_contained"]

MiB = 1024**2


def all_contained(runs: Sequence[AttackRun]) -> bool:
    """True when every run was contained (what makes `stockade attack` exit 0)."""
    return all(run.verdict is Verdict.CONTAINED for run in runs)


def report_dict(runs: Sequence[AttackRun], *, profile: str, mode: str, isolate: str,
                timeout: float | None, bounds: Bounds) -> dict[str, Any]:
    """The JSON report: `{"attacks": [{"name", "verdict", "outcome", "impact", ...}], ...}`
    plus the settings and bounds the verdicts were judged against."""
    verdicts = Counter(run.verdict.value for run in runs)
    return {
        "profile": profile, "mode": mode, "isolate": isolate if mode == "stockade" else None,
        "timeout_s": timeout, "bounds": bounds.as_dict(),
        "summary": {verdict.value: verdicts.get(verdict.value, 0) for verdict in Verdict},
        "attacks": [run.as_dict() for run in runs],
    }


_STYLE = {Verdict.CONTAINED: "green", Verdict.DEGRADED: "yellow", Verdict.ESCAPED: "bold red",
          Verdict.ERROR: "bold magenta"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mib(value: int) -> str:
    return "0" if value == 0 else f"{value / MiB:.1f}"


def describe_bounds(bounds: Bounds) -> str:
    """One line stating the bounds every verdict was judged against."""
    parts = [] if bounds.wall_s is None else [f"wall ≤ {bounds.wall_s:.1f} s"]
    for label, value in (("RSS+", bounds.rss_growth_bytes), ("output", bounds.output_bytes),
                         ("scratch", bounds.bytes_created),
                         ("device writes", bounds.device_write_bytes)):
        if value is not None:
            parts.append(f"{label} ≤ {_mib(value)} MiB")
    parts += [f"fds ≤ {bounds.fds_held}", f"files ≤ {bounds.inodes_created}",
              f"flushes ≤ {bounds.device_flushes}",
              f"kthr ≤ {KERNEL_BASE_S:g} s + {KERNEL_PER_WALL:.0%} of wall"]
    return "bounds: " + ", ".join(parts)


def render_table(runs: Sequence[AttackRun], console: Console, *, title: str,
                 bounds: Bounds) -> None:
    """Print the runs as a table, the bounds, then the reasons behind every verdict but
    `contained`."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    columns = ["attack", "outcome", "verdict", "wall s", "cpu usr/sys", "kthr s", "iowait",
               "flushes",
               "dev MiB", "RSS+ MiB", "fds", "files", "file MiB", "out MiB", "late ms"]
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right",
                         no_wrap=True)
    for run in runs:
        i = run.impact
        name = run.attack.name + ("" if run.attack.source == "paper" else " *")
        table.add_row(
            name, run.outcome,
            f"[{_STYLE[run.verdict]}]{run.verdict.value}[/]",
            f"{i.wall_s:.2f}", f"{i.cpu_user_s:.2f}/{i.cpu_sys_s:.2f}",
            f"{i.kernel_threads_s:.2f}", f"{i.machine_iowait_s:.2f}", str(i.device_flushes),
            _mib(i.device_write_bytes),
            _mib(i.rss_growth_bytes), str(i.fds_held),
            str(i.inodes_created), _mib(i.bytes_created), _mib(i.output_bytes),
            _ms(i.breach_to_containment_ms),
        )
    console.print(table)
    console.print("* ours; the others are the strategies of arXiv:2509.11242. cpu: the process "
                  "running the guest; kthr s: CPU of the kernel's own threads; iowait: the "
                  "machine's; flushes, dev: the scratch disk's; files: entries made in the "
                  "scratch dir; late ms: from the first crossed bound to the end of the run.")
    console.print(describe_bounds(bounds))
    for run in runs:
        if run.verdict is not Verdict.CONTAINED:
            console.print(f"[{_STYLE[run.verdict]}]{run.attack.name}[/]: "
                          + "; ".join(run.reasons))
    counts = Counter(run.verdict for run in runs)
    console.print(", ".join(f"{counts.get(v, 0)} {v.value}" for v in Verdict))

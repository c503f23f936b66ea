"""A PNG chart of attack-suite runs side by side (matplotlib, imported here only; beside
the benchmark's charts, whose helpers it shares).

Input: the JSON reports of `stockade attack --json`, one per run (a profile under
Stockade, or `--baseline`: plain wasmtime defaults). Left: the verdict of every attack
in every run, with the outcome that ended it. Right: what each attack cost the host
(CPU seconds of the process running the guest plus the kernel's threads), per run on a
log scale, so Stockade's containment and plain wasmtime's exposure read side by side.

Saved reports may have been edited or be something else entirely: `check_report` takes
only the shape the chart reads, and bounded counts (the figure grows with them).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_attack_chart", "run_label", "check_report", "chart_format",
           "CHART_FORMATS", "MAX_ATTACKS", "MAX_RUNS"]

_VERDICT_COLORS = {"contained": "#4caf50", "degraded": "#ffb300", "escaped": "#e53935",
                   "error": "#8e24aa"}
_RUN_COLORS = ("tab:blue", "tab:cyan", "tab:purple", "tab:green")
_BASELINE_COLOR = "tab:red"
_FLOOR_S = 0.001  # a log axis needs a floor: below a millisecond reads as "nothing"
# What matplotlib's own backends write (Agg, SVG, PDF), with nothing else installed.
CHART_FORMATS = ("png", "svg", "pdf")
MAX_ATTACKS = 120  # distinct attacks on one chart (the catalogue has 30)
MAX_TEXT = 200  # characters of a name, outcome or verdict drawn (real ones: under 40)
MAX_RUNS = 12  # reports side by side
_IMPACT = ("cpu_user_s", "cpu_sys_s", "kernel_threads_s")  # what the bars add up
_MAX_SECONDS = 1e9  # their sum stays finite on a log axis


def chart_format(path: Path) -> str:
    """The format of a chart written to `path`, from its suffix (one of CHART_FORMATS).
    Raises ValueError naming the formats."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in CHART_FORMATS:
        raise ValueError(f"a chart is written as {', '.join('.' + f for f in CHART_FORMATS)}"
                         f", not {'.' + suffix if suffix else 'a file without a suffix'}")
    return suffix


def check_report(data: object) -> None:
    """Raise ValueError (saying what and where) unless `data` has the shape of a
    `stockade attack --json` report as far as the chart reads it: an `attacks` list (at
    most MAX_ATTACKS) of objects with string `name`, `outcome` and `verdict`, `impact`
    seconds from 0 to 1e9, string (or absent) `mode`, `profile` and `isolate`."""
    if not isinstance(data, dict) or not isinstance(data.get("attacks"), list):
        raise ValueError('no "attacks" list')
    for key in ("mode", "profile", "isolate"):
        if not _short(data.get(key), none=True):
            raise ValueError(f"{key}: not a string of one line, at most {MAX_TEXT} characters")
    if len(data["attacks"]) > MAX_ATTACKS:
        raise ValueError(f"{len(data['attacks'])} attacks, more than the {MAX_ATTACKS} a "
                         "chart shows")
    for index, attack in enumerate(data["attacks"]):
        where = f"attacks[{index}]"
        if not isinstance(attack, dict):
            raise ValueError(f"{where}: not an object")
        for key in ("name", "outcome", "verdict"):
            if not _short(attack.get(key)):
                raise ValueError(f"{where}.{key}: missing or not a string of one line, at "
                                 f"most {MAX_TEXT} characters")
        impact = attack.get("impact", {})
        if not isinstance(impact, dict):
            raise ValueError(f"{where}.impact: not an object")
        for key in _IMPACT:
            value = impact.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= _MAX_SECONDS:  # NaN too: json reads it
                raise ValueError(f"{where}.impact.{key}: not a number of seconds")


def _short(value: object, none: bool = False) -> bool:
    """Whether `value` is text a chart can draw quickly: one line of at most MAX_TEXT
    characters (a name of 1 MB took matplotlib minutes and 700 MB)."""
    if value is None:
        return none
    return isinstance(value, str) and len(value) <= MAX_TEXT and "\n" not in value \
        and "\r" not in value


def run_label(report: Mapping[str, Any]) -> str:
    """How a run is named on the chart: its profile, or plain wasmtime for a baseline."""
    if report.get("mode") == "baseline":
        return "plain wasmtime"
    isolate = report.get("isolate")
    return _text(f"{report.get('profile') or '?'}" + (f" ({isolate})" if isolate else ""))


def _text(words: str) -> str:
    """`words` drawn as they are: a `$` pair starts mathtext, whose parser raised on
    words from a report (`$\\frac{$`)."""
    return words.replace("$", r"\$")


def _host_cpu(attack: Mapping[str, Any]) -> float:
    impact = attack.get("impact", {})
    return float(impact.get("cpu_user_s", 0.0) + impact.get("cpu_sys_s", 0.0)
                 + impact.get("kernel_threads_s", 0.0))


def render_attack_chart(reports: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Write the chart of `reports` (each passing `check_report`) to `path`, in the
    format its suffix names (`chart_format`), as a new file renamed into place
    (`replace_file`: never through a link, never onto a device); False (nothing written)
    when they hold no attack. Raises ValueError for a format, more than MAX_RUNS reports
    or MAX_ATTACKS attacks, OSError when `path` cannot be written."""
    from ..regularfile import replace_file
    from .charts import _DPI, _pyplot

    kind = chart_format(path)
    if len(reports) > MAX_RUNS:
        raise ValueError(f"{len(reports)} reports, more than the {MAX_RUNS} a chart shows")
    names: list[str] = []
    for report in reports:
        for attack in report.get("attacks", []):
            if attack["name"] not in names:
                names.append(attack["name"])
    if not names:
        return False
    if len(names) > MAX_ATTACKS:
        raise ValueError(f"{len(names)} attacks, more than the {MAX_ATTACKS} a chart shows")
    plt = _pyplot()
    by_run = [{a["name"]: a for a in report.get("attacks", [])} for report in reports]
    labels = [run_label(report) for report in reports]
    height = 0.32 * len(names) + 1.8
    fig, (grid, bars) = plt.subplots(
        1, 2, figsize=(4.2 + 1.6 * len(reports) + 5, height), sharey=True,
        gridspec_kw={"width_ratios": [1.6 * len(reports), 5]})
    for column, attacks in enumerate(by_run):
        for row, name in enumerate(names):
            attack = attacks.get(name)
            verdict = attack["verdict"] if attack else None
            color = _VERDICT_COLORS.get(verdict or "", "#e0e0e0")
            grid.add_patch(plt.Rectangle((column, row - 0.5), 1, 1, facecolor=color,
                                         edgecolor="white", linewidth=1.5))
            grid.text(column + 0.5, row, _text(attack["outcome"]) if attack else "not run",
                      ha="center", va="center", fontsize=7)
    grid.set_xlim(0, len(reports))
    grid.set_ylim(len(names) - 0.5, -0.5)
    grid.set_xticks([i + 0.5 for i in range(len(reports))])
    grid.set_xticklabels(labels, fontsize=8)
    grid.xaxis.tick_top()
    grid.set_yticks(range(len(names)))
    grid.set_yticklabels([_text(name) for name in names], fontsize=8)
    grid.tick_params(length=0)
    for side in grid.spines.values():
        side.set_visible(False)
    grid.set_title("verdict (cell: how the run ended)", fontsize=9, pad=22)
    patches = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _VERDICT_COLORS.values()]
    grid.legend(patches, list(_VERDICT_COLORS), fontsize=8, ncol=3, frameon=False,
                loc="upper center", bbox_to_anchor=(0.5, 0.0), handlelength=1.2)

    width = 0.8 / len(reports)
    shades = iter(_RUN_COLORS)
    for column, (report, attacks) in enumerate(zip(reports, by_run, strict=True)):
        color = _BASELINE_COLOR if report.get("mode") == "baseline" else \
            next(shades, "tab:gray")
        ys = [row - 0.4 + width * (column + 0.5) for row in range(len(names))]
        values = [max(_host_cpu(attacks[name]), _FLOOR_S) if name in attacks else 0.0
                  for name in names]
        bars.barh(ys, values, height=width, color=color, label=labels[column])
    bars.set_xscale("log")
    bars.set_xlim(left=_FLOOR_S / 2)  # a run under a millisecond still shows a stub
    bars.set_xlabel("host CPU seconds: the guest's process + kernel threads "
                    "(log scale; under 1 ms drawn as 1 ms)", fontsize=8)
    bars.set_title("what each attack cost the host", fontsize=9, pad=22)
    bars.grid(True, axis="x", which="major", alpha=0.3)
    bars.legend(fontsize=8, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                ncol=len(reports))
    fig.suptitle("Attack suite: containment and host impact per run", fontsize=11)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=kind, dpi=_DPI)
    plt.close(fig)
    replace_file(path, image.getvalue(), mode=None)  # a user's output, as `cp` writes it
    return True

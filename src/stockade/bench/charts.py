"""PNG charts of a run (matplotlib, imported here only): latency CDF per backend, cold
start bars, I/O overhead by payload size, artifact sizes (log scale), compute ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .derive import (
    BASELINE,
    cold_start_measured,
    cold_start_ms,
    compute_ratios,
    hello,
    io_ratios,
    workload_keys,
)
from .results import BenchResults

__all__ = ["render_charts", "charts_available", "CHARTS", "NO_CHARTS"]

CHARTS = ("latency_cdf.png", "cold_start.png", "io_overhead.png", "artifact_sizes.png",
          "compute_ratios.png")
_DPI = 80


NO_CHARTS = "no charts: matplotlib is not installed (pip install 'stockade[bench]')"


def charts_available() -> bool:
    """Whether matplotlib can be imported (the charts are an optional extra)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Render to memory, then `replace_file`: never through a link planted at `path`."""
    import io

    from ..regularfile import replace_file

    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=_DPI, format="png")
    replace_file(path, image.getvalue(), mode=None)
    fig.clf()


# One colour per family of hosts, line styles within a family: a reader tells the
# families apart at a glance and the members by style (tab10 has no near-duplicates).
_FAMILIES = (
    ("stockade", "tab:blue"), ("wasmtime", "tab:orange"), ("pulley", "tab:orange"),
    ("node", "tab:green"), ("extism", "tab:purple"), ("native", "black"),
    ("crun", "tab:brown"), ("vm", "tab:red"), ("python", "tab:gray"),
)
_STYLES = ("-", "--", ":", "-.")


def _family(name: str) -> tuple[str, str]:
    """(family, colour) of a backend, by its name's prefix."""
    for prefix, color in _FAMILIES:
        if name.startswith(prefix):
            return prefix if prefix != "pulley" else "wasmtime", color
    return name, "tab:olive"


def _styled(names: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, line style) per backend: the family's colour, the nth member's style."""
    seen: dict[str, int] = {}
    styles = {}
    for name in names:
        family, color = _family(name)
        index = seen.get(family, 0)
        seen[family] = index + 1
        styles[name] = (color, _STYLES[index % len(_STYLES)])
    return styles


def _latency_cdf(plt: Any, results: BenchResults, path: Path) -> bool:
    # Two panels with their own scales: warm in-process hosts (µs..ms) and a new
    # process per request (ms..s); each legend sits outside its panel, off the data.
    series: dict[str, list[tuple[str, list[float]]]] = {"in-process": [], "process": []}
    for info in results.ran():
        found = hello(results, info.name)
        values = sorted(found.metrics.get("wall_ms", [])) if found else []
        if values:
            series["process" if info.kind == "process" else "in-process"].append(
                (info.name, values))
    panels = [(kind, rows) for kind, rows in series.items() if rows]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels) + 0.6),
                             squeeze=False)
    titles = {"in-process": "warm hosts: a fresh instance per request, in one process",
              "process": "a new process per request (cold start every time)"}
    for ax, (kind, rows) in zip(axes[:, 0], panels, strict=True):
        styles = _styled([name for name, _ in rows])
        # legend order = median order, so the legend reads like the curves, left to right
        for name, values in sorted(rows, key=lambda row: row[1][len(row[1]) // 2]):
            ys = [(i + 1) / len(values) for i in range(len(values))]
            color, style = styles[name]
            ax.step(values, ys, where="post", label=name, color=color, linestyle=style,
                    linewidth=1.6)
        ax.set_xscale("log")
        ax.set_ylabel("fraction of requests")
        ax.set_title(titles[kind], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  title="fastest first", title_fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("hello, request to completion (ms, log scale)")
    fig.suptitle("Per-request latency CDF", fontsize=11)
    _save(fig, path)
    return True


def _cold_start(plt: Any, results: BenchResults, path: Path) -> bool:
    rows: list[tuple[str, float, str]] = []
    for info in results.ran():
        found = hello(results, info.name)
        if cold_start_measured(info.kind, found):
            value = cold_start_ms(found)
            kind = "cold: new process, request to first output"
        else:  # the isolated worker too: a warm process, request to completion
            value = found.p50() if found else None
            kind = "warm: fresh instance in a running host, for scale"
        if value is not None:
            rows.append((info.name, value, kind))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    palette = {}
    for i, (_, value, kind) in enumerate(rows):
        color = "tab:blue" if kind.startswith("cold") else "tab:orange"
        ax.barh(i, value, color=color, label=None if kind in palette else kind)
        palette[kind] = color
        ax.text(value, i, f" {value:.3g} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _, _ in rows])
    ax.set_xscale("log")
    ax.set_xlabel("hello, p50 (ms, log scale)")
    ax.set_title("Start-up: cold processes vs warm in-process hosts")
    if rows:
        ax.legend(fontsize=7, loc="upper right")
    ax.invert_yaxis()
    _save(fig, path)
    return bool(rows)


def _io_overhead(plt: Any, results: BenchResults, path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for info in results.ran():
        ratios = io_ratios(results, info.name)
        if info.name == BASELINE or not ratios:
            continue
        sizes = sorted(ratios)
        ax.plot(sizes, [ratios[s] for s in sizes], marker="o", label=info.name)
        drawn = True
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(2.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("echo payload (bytes, log scale)")
    ax.set_ylabel("time / native (log scale)")
    ax.set_title("I/O: echo time / native process (native includes its process start)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    _save(fig, path)
    return drawn


# Artifact names in results.json: "<workload><format suffix>", or a shared platform
# file (container rootfs, VM kernel and initramfs) under no workload.
_FORMATS = (
    (".wasm", "module (.wasm)", "tab:blue"),
    (".cwasm (Stockade AoT cache)", "Stockade AoT (.cwasm)", "tab:cyan"),
    (".cwasm (cranelift)", "wasmtime cranelift (.cwasm)", "tab:orange"),
    (".cwasm (pulley)", "Pulley bytecode (.cwasm)", "tab:olive"),
    (" native binary", "native binary (static)", "black"),
    (" container layer (tar.gz)", "container layer (tar.gz)", "tab:brown"),
)
_SHARED = "platform (shared)"


def _split_artifact(name: str) -> tuple[str, str, str]:
    """(workload, format label, colour) of an artifact name."""
    for suffix, label, color in _FORMATS:
        if name.endswith(suffix) and name[:-len(suffix)] and " " not in name[:-len(suffix)]:
            return name[:-len(suffix)], label, color
    return _SHARED, name, "tab:red"


def _artifacts(plt: Any, results: BenchResults, path: Path) -> bool:
    if not results.artifacts:
        return False
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for name, size in results.artifacts.items():
        workload, label, color = _split_artifact(name)
        groups.setdefault(workload, []).append((label, color, size))
    order = sorted((w for w in groups if w != _SHARED), key=lambda w: min(
        size for _, _, size in groups[w]))
    order += [_SHARED] if _SHARED in groups else []
    rank = {label: i for i, (_, label, _) in enumerate(_FORMATS)}
    bars = sum(len(rows) for rows in groups.values()) + len(order)
    fig, ax = plt.subplots(figsize=(9, 0.22 * bars + 1.4))
    y, ticks, labels, shown = 0.0, [], [], set()
    for workload in order:
        rows = sorted(groups[workload], key=lambda row: (rank.get(row[0], 99), row[0]))
        first = y
        for label, color, size in rows:
            legend = label if workload != _SHARED and label not in shown else None
            shown.add(label)
            ax.barh(y, size, color=color, height=0.85, label=legend)
            text = f" {size / 1024**2:.1f} MiB" if size >= 1024**2 else f" {size / 1024:.0f} KiB"
            ax.text(size, y, text + (f"  {label}" if workload == _SHARED else ""),
                    va="center", fontsize=7)
            y += 1
        ticks.append((first + y - 1) / 2)
        labels.append(workload)
        y += 1  # a gap between workloads
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 6)  # room for the size labels
    ax.set_xlabel("bytes (log scale)")
    ax.set_title("Artifact sizes by workload and format")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title="format", title_fontsize=8)
    _save(fig, path)
    return True


def _compute(plt: Any, results: BenchResults, path: Path) -> bool:
    keys = workload_keys(results, "compute")
    names = [b.name for b in results.ran() if b.name != BASELINE and
             compute_ratios(results, b.name)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ratios = compute_ratios(results, name)
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [ratios.get(key, 0.0) for key in keys], width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
    ax.set_xticklabels([k.split("/", 1)[1] for k in keys], rotation=45, ha="right",
                       fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("hot loop / native (log scale)")
    ax.set_title("Compute: ratio to native per kernel and size")
    if names:
        ax.legend(fontsize=7)
    _save(fig, path)
    return bool(names)


def render_charts(results: BenchResults, out: Path) -> list[str]:
    """Write the charts into `out`; returns the file names written (empty ones left out;
    none without matplotlib, see `charts_available`)."""
    if not charts_available():
        return []
    plt = _pyplot()
    drawers = (_latency_cdf, _cold_start, _io_overhead, _artifacts, _compute)
    written = []
    try:
        for name, draw in zip(CHARTS, drawers, strict=True):
            if draw(plt, results, out / name):
                written.append(name)
            else:
                (out / name).unlink(missing_ok=True)
    finally:
        plt.close("all")
    return written

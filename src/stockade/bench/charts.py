"""PNG charts of a run (matplotlib, imported here only): latency CDF per backend, cold
start bars, I/O overhead by payload size, artifact sizes (log scale), compute ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .derive import BASELINE, cold_start_ms, compute_ratios, hello, io_ratios, workload_keys
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
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    fig.clf()


def _latency_cdf(plt: Any, results: BenchResults, path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.get_cmap("tab20").colors
    drawn = False
    for index, info in enumerate(results.ran()):
        found = hello(results, info.name)
        values = sorted(found.metrics.get("wall_ms", [])) if found else []
        if not values:
            continue
        ys = [(i + 1) / len(values) for i in range(len(values))]
        style = "--" if info.kind == "process" else "-"
        ax.step(values, ys, where="post", label=info.name, linestyle=style,
                color=colors[(2 * index) % 20 + (index // 10) % 2])
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("hello, request to completion (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Per-request latency CDF (warm hosts; process backends spawn each time)")
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    return drawn


def _cold_start(plt: Any, results: BenchResults, path: Path) -> bool:
    rows: list[tuple[str, float, str]] = []
    for info in results.ran():
        found = hello(results, info.name)
        if info.kind == "process":
            value = cold_start_ms(found)
            kind = "cold: new process, request to first output"
        else:
            value = found.p50() if found else None
            kind = "warm: in-process fresh instance, for scale"
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


def _artifacts(plt: Any, results: BenchResults, path: Path) -> bool:
    items = sorted(results.artifacts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:green")
    ax.set_xscale("log")
    ax.set_xlabel("bytes (log scale)")
    ax.set_title("Artifact sizes")
    ax.tick_params(axis="y", labelsize=7)
    _save(fig, path)
    return bool(items)


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

"""The Markdown report of a run: summary, method, tables, paper claims and goals."""

from __future__ import annotations

from collections.abc import Sequence

from .claims import ClaimRow, goal_rows, paper_rows
from .derive import (
    BASELINE,
    cold_start_measured,
    cold_start_ms,
    compute_geomean,
    compute_ratios,
    hello,
    io_ratios,
    micro_figure,
    workload_keys,
)
from .markdown import markdown_table
from .method import method_section
from .results import BenchResults
from .workloads import format_bytes

__all__ = ["render_report", "summary_table"]


def _n(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.1f} ms" if value < 100 else \
        f"{value:.0f} ms"


def _mib(kib: float | None) -> str:
    """A peak RSS: a static native process is about 0.5 MiB, which whole MiB showed as 1."""
    if kib is None:
        return "—"
    return f"{kib / 1024:.1f} MiB" if kib < 10 * 1024 else f"{kib / 1024:.0f} MiB"


def _rate(per_second: float) -> str:
    """Requests a second with the digits a slow backend needs (a microVM per request is
    0.11/s, which whole numbers showed as 0/s)."""
    if per_second >= 100:
        return f"{per_second:,.0f}/s"
    return f"{per_second:.3g}/s"


def summary_table(results: BenchResults) -> str:
    """One row per backend that ran: the headline figures."""
    rows = []
    big = "io/echo/" + str(16 << 20)
    for info in results.ran():
        hello_m = hello(results, info.name)
        summary = hello_m.summary() if hello_m else None
        latency = "—" if summary is None else \
            f"{_ms(summary.p50)} / {_ms(summary.p95)} / {_ms(summary.p99)}"
        cold = cold_start_ms(hello_m) if cold_start_measured(info.kind, hello_m) else None
        io = io_ratios(results, info.name).get(16 << 20)
        python = results.get(info.name, "real/python")
        peak = hello_m.p50("rss_kb") if hello_m else None
        rows.append([
            info.title, _ms(cold), latency,
            _n(compute_geomean(results, info.name), 2, "x"),
            _n(io, 2, "x") if results.get(info.name, big) else "—",
            _ms(python.p50() if python else None),
            _mib(peak),
        ])
    headers = ["backend", "cold start (hello, first output p50)",
               "hello latency p50 / p95 / p99", "compute vs native (geomean, hot loop)",
               "echo 16 MiB vs native", "CPython print(1) p50", "peak RSS (hello, p50)"]
    return markdown_table(headers, rows)


def _startup(results: BenchResults) -> str:
    rows = []
    for info in results.ran():
        found = hello(results, info.name)
        if found is None or found.count == 0:
            continue
        wall, first = found.summary(), found.summary("first_ms")
        cpu = found.p50("cpu_ms")
        rss = found.p50("rss_kb")
        rows.append([info.title, info.kind, str(found.count),
                     _ms(first.p50) if first else "—",
                     f"{_ms(wall.min)} / {_ms(wall.p50)} / {_ms(wall.max)}" if wall else "—",
                     f"{_ms(wall.p95)} / {_ms(wall.p99)}" if wall else "—",
                     str(wall.outliers) if wall else "—",
                     _rate(1000 / wall.mean) if wall and wall.mean > 0 else "—",
                     _ms(cpu), _n(None if rss is None else rss / 1024, 1, " MiB")])
    return markdown_table(["backend", "kind", "n", "first output p50", "min / median / max",
                           "p95 / p99", "outliers", "throughput (1 caller)", "CPU p50",
                           "peak RSS p50"], rows)


def _compute(results: BenchResults) -> str:
    names = [b.name for b in results.ran() if b.name != BASELINE and
             compute_ratios(results, b.name)]
    rows = []
    for key in workload_keys(results, "compute"):
        base = results.get(BASELINE, key)
        label = results.workload(key) or {}
        ratios = [compute_ratios(results, n).get(key) for n in names]
        rows.append([str(label.get("label", key)), _ms(base.p50("hot_ms") if base else None),
                     *[_n(r, 2, "x") for r in ratios]])
    rows.append(["**geometric mean**", "", *[_n(compute_geomean(results, n), 2, "x")
                                              for n in names]])
    return markdown_table(["kernel", "native hot loop p50", *names], rows)


def _io(results: BenchResults) -> str:
    names = [b.name for b in results.ran() if b.name != BASELINE and io_ratios(results, b.name)]
    rows = []
    for key in workload_keys(results, "io"):
        size = int(key.rsplit("/", 1)[1])
        base = results.get(BASELINE, key)
        rows.append([format_bytes(size), _ms(base.p50() if base else None),
                     *[_n(io_ratios(results, n).get(size), 2, "x") for n in names]])
    return markdown_table(["payload", "native p50", *names], rows)


def _micro(results: BenchResults) -> str:
    units = {"cpu": "CPU loop, ms", "clock": "clock_gettime, ns/call",
             "syscall": "getpid / WASI call, ns/call", "memcpy": "memcpy, GB/s"}
    names = [b.name for b in results.ran() if any(results.get(b.name, k)
                                                   for k in workload_keys(results, "micro"))]
    rows = []
    for key in workload_keys(results, "micro"):
        kind = key.rsplit("/", 1)[1]
        rows.append([units.get(kind, kind),
                     *[_n(micro_figure(results, n, kind), 2) for n in names]])
    return markdown_table(["microbenchmark", *names], rows)


def _python(results: BenchResults) -> str:
    rows = []
    for info in results.ran():
        found = results.get(info.name, "real/python")
        if found is None or found.count == 0:
            continue
        wall = found.summary()
        first = found.summary("first_ms")
        rows.append([info.title, str(found.count), _ms(first.p50) if first else "—",
                     f"{_ms(wall.min)} / {_ms(wall.p50)} / {_ms(wall.max)}" if wall else "—"])
    return markdown_table(["backend", "n", "first output p50", "min / median / max"], rows)


def _artifacts(results: BenchResults) -> str:
    rows = [[name, f"{size:,}", format_bytes(size)]
            for name, size in sorted(results.artifacts.items())]
    return markdown_table(["artifact", "bytes", "size"], rows)


def _claims(rows: list[ClaimRow], verdict: bool) -> str:
    headers = ["source", "claim", "measured here", "this machine"]
    body = [[r.source, r.claim, r.measured, r.value] + ([r.verdict] if verdict else [])
            for r in rows]
    return markdown_table(headers + (["verdict"] if verdict else []), body)


def _problems(results: BenchResults) -> list[str]:
    lines = [f"- **{b.name}** skipped: {b.skipped}" for b in results.backends if b.skipped]
    lines += [f"- workload `{k}` skipped: {v}" for k, v in results.skipped_workloads.items()]
    for m in results.measurements:
        if m.failures:
            lines.append(f"- `{m.backend}` on `{m.workload}`: {m.failures} failed run(s) of "
                         f"{m.failures + m.count}: {m.error}")
        elif m.error:
            lines.append(f"- `{m.backend}` on `{m.workload}` stopped: {m.error}")
    for key, seen in results.agreement().items():
        lines.append(f"- **checksum mismatch** on `{key}`: " +
                     ", ".join(f"{b}={d}" for b, d in seen.items()))
    return lines


def render_report(results: BenchResults, charts: Sequence[str] = ()) -> str:
    """The whole report as Markdown; `charts` are PNG file names to embed."""
    meta = results.meta
    machine = meta.get("machine", {})
    problems = _problems(results)
    agree = "all backends agree" if not results.agreement() else "MISMATCHES (see below)"
    parts = [
        f"# Stockade benchmark — {meta.get('started', '')[:10]}",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, {machine.get('os')}, kernel {machine.get('kernel')} "
        f"({machine.get('virtualization') or 'unknown virtualization'}). Plan "
        f"`{meta.get('plan', {}).get('name')}`, {meta.get('duration_s')} s. Load average "
        f"before/after: {meta.get('load_before')} / {meta.get('load_after')} (a shared "
        "machine: the min / median / max columns show the noise). Checksums: "
        f"{agree}.",
        "## Summary", summary_table(results),
        "## Paper claim vs this machine", _claims(paper_rows(results), False),
        "## Goals", _claims(goal_rows(results), True),
        "## Start-up and per-call latency (hello)", _startup(results),
        "## Compute: hot loop, ratio to native", _compute(results),
        "## I/O: echo through stdin/stdout, request to completion, ratio to native", _io(results),
        "## Edera microbenchmarks", _micro(results),
        "## CPython 3.12 for WASI: `print(1)`", _python(results),
        "## Artifact sizes", _artifacts(results),
    ]
    if charts:
        parts.append("## Charts")
        parts += [f"![{name}]({name})" for name in charts]
    parts += ["## Skips, failures, checksum agreement",
              "\n".join(problems) if problems else "Nothing skipped; every run succeeded; "
              "every backend produced the same checksums.",
              method_section(results)]
    return "\n\n".join(parts) + "\n"

"""What the papers report, the project's goals, and the same figures on this machine.

Lumos: arXiv:2510.05118 (ACM IoT 2025; containers vs interpreted vs AoT Wasm on WasmEdge,
Knative). Edera: arXiv:2501.04580, v1 and v2 (Edera's VMs vs Docker). The papers measured
other stacks on other hardware; the rows say what the closest comparison here is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .derive import cold_start_ms, compute_geomean, compute_ratios, hello, io_ratios, micro_figure
from .results import BenchResults
from .stats import ratio

__all__ = ["ClaimRow", "paper_rows", "goal_rows", "gateway_row"]

SIXTEEN_MIB = 16 << 20


@dataclass(frozen=True)
class ClaimRow:
    """One line of a comparison table: source, claim, what was measured, the figure."""

    source: str
    claim: str
    measured: str
    value: str
    verdict: str = ""


def _x(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}x"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{(value - 1) * 100:+.1f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _p50(results: BenchResults, backend: str, key: str, metric: str = "wall_ms") -> float | None:
    found = results.get(backend, key)
    return found.p50(metric) if found else None


def paper_rows(results: BenchResults) -> list[ClaimRow]:
    """Each paper figure next to the closest measurement of this run."""
    art = results.artifacts
    layer = art.get("noop container layer (tar.gz)")
    cwasm = art.get("noop.cwasm (Stockade AoT cache)")
    wasm = art.get("noop.wasm")
    crun_start = cold_start_ms(hello(results, "crun"))
    run_start = cold_start_ms(hello(results, "stockade-run"))
    warm = _p50(results, "stockade", "startup/hello")
    pulley_hello = ratio(_p50(results, "pulley", "startup/hello"), warm)
    pulley_compute = compute_ratios(results, "pulley")
    stockade_compute = compute_ratios(results, "stockade")
    interp = [ratio(v, stockade_compute.get(k)) for k, v in pulley_compute.items()]
    interp_max = max((v for v in interp if v is not None), default=None)
    big = f"io/echo/{SIXTEEN_MIB}"
    pulley_io = ratio(_p50(results, "pulley", big), _p50(results, "stockade", big))
    native_cpu = micro_figure(results, "native", "cpu")
    native_sys = micro_figure(results, "native", "syscall")
    native_mem = micro_figure(results, "native", "memcpy")
    crun_hello = _p50(results, "crun", "startup/hello")
    vm_boot = cold_start_ms(hello(results, "vm"))
    vm_info = results.backend("vm")
    emulated = " (TCG emulation)" if vm_info is not None and "TCG" in vm_info.note else ""
    vm_cpu = micro_figure(results, "vm-warm", "cpu")
    return [
        ClaimRow("Lumos", "AoT Wasm images up to 30x smaller than containers",
                 "hello: container layer (static binary, tar.gz) / Stockade .cwasm; / .wasm",
                 f"{_x(ratio(layer, cwasm), 1)}; {_x(ratio(layer, wasm), 0)}"),
        ClaimRow("Lumos", "AoT Wasm cold start up to 16 % faster than containers",
                 "hello first output: `stockade run` (cache) vs `crun run`",
                 f"{_ms(run_start)} vs {_ms(crun_start)} ({_pct(ratio(run_start, crun_start))})"),
        ClaimRow("Lumos", "interpreted Wasm up to 55x higher warm latency",
                 "Pulley / Stockade AoT: hello latency; compute hot loop (max)",
                 f"{_x(pulley_hello)}; {_x(interp_max, 1)}"),
        ClaimRow("Lumos", "interpreted Wasm up to 10x I/O serialization overhead",
                 "echo 16 MiB: Pulley / Stockade AoT", _x(pulley_io)),
        ClaimRow("Edera v1", "CPU -0.9 % (v2: -2.14 %) vs Docker",
                 "CPU loop: crun / native; Stockade / native",
                 f"{_pct(ratio(micro_figure(results, 'crun', 'cpu'), native_cpu))}; "
                 f"{_pct(ratio(micro_figure(results, 'stockade', 'cpu'), native_cpu))}"),
        ClaimRow("Edera v1", "syscalls +3 % vs Docker",
                 "getpid loop: crun / native; Stockade WASI fd_fdstat_get / native getpid",
                 f"{_pct(ratio(micro_figure(results, 'crun', 'syscall'), native_sys))}; "
                 f"{_pct(ratio(micro_figure(results, 'stockade', 'syscall'), native_sys))}"),
        ClaimRow("Edera v1", "memory +0-7 % vs Docker",
                 "memcpy bandwidth: crun / native; Stockade / native",
                 f"{_pct(ratio(micro_figure(results, 'crun', 'memcpy'), native_mem))}; "
                 f"{_pct(ratio(micro_figure(results, 'stockade', 'memcpy'), native_mem))}"),
        ClaimRow("Edera v1 / v2", "startup +648 ms over Docker's 177 ms (v2: +740 over 381 ms)",
                 "hello request to exit: crun; `stockade run`; Stockade warm",
                 f"{_ms(crun_hello)}; {_ms(_p50(results, 'stockade-run', 'startup/hello'))}; "
                 f"{_ms(warm)}"),
        ClaimRow("Edera v1", "a VM starts +648 ms over Docker's 177 ms",
                 f"hello: QEMU microVM boot to first output{emulated} vs `crun run`",
                 f"{_ms(vm_boot)} vs {_ms(crun_start)}"
                 + ("" if vm_boot is None or crun_start is None
                    else f" (+{vm_boot - crun_start:.0f} ms)")),
        ClaimRow("Edera v1", "CPU -0.9 % in a VM vs Docker",
                 f"CPU loop inside a running microVM{emulated} / native",
                 _pct(ratio(vm_cpu, native_cpu))),
    ]


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value <= limit else "missed"


def _at_least(value: float | None, floor: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value >= floor else "missed"


def gateway_row(results: BenchResults) -> ClaimRow:
    """The gateway goal: hello through `stockade serve` (default telemetry) over a raw
    ASGI hello on the same server, measured in this run (`gatewayload`). Two figures:
    the throughput ratio and the servers' CPU per request (raw / gateway). The verdict
    takes the lower: on a loaded machine the raw server's throughput is bounded by
    scheduling rather than by its CPU, which flatters the throughput ratio."""
    from .gatewayload import GOAL_RATIO

    found = results.gateway
    ratios = found.get("ratio") or {}
    cpu_ratios = found.get("cpu_ratio") or {}
    default, off = ratios.get("default"), ratios.get("off")
    cpu, cpu_off = cpu_ratios.get("default"), cpu_ratios.get("off")
    if default is None:
        measured = f"not measured: {found.get('skipped', 'not in this run')}"
        value = "n/a"
    else:
        measured = (f"req/s ratio, median of {found.get('rounds_n')} interleaved rounds of "
                    f"{found.get('seconds')} s (wrk -c{found.get('connections')}, "
                    f"{found.get('workers')} workers, {found.get('pinning')}, functions "
                    f"isolate={found.get('isolate')}); then the servers' CPU per request, "
                    "raw / gateway; the verdict takes the lower")
        value = f"{default:.2f}" + ("" if off is None else f" (telemetry off: {off:.2f})")
        if cpu is not None:
            value += f"; CPU: {cpu:.2f}" + ("" if cpu_off is None else f" (off: {cpu_off:.2f})")
    lower = None if default is None else min(default, cpu if cpu is not None else default)
    return ClaimRow("goal", f"gateway hello / raw ASGI hello on the same server >= "
                    f"{GOAL_RATIO:.2f} (default telemetry)", measured, value,
                    _at_least(lower, GOAL_RATIO))


def goal_rows(results: BenchResults) -> list[ClaimRow]:
    """The issue's goals, measured in this run."""
    # The fresh-instance goal is the gateway's per-request path: the fast path when it ran.
    warm_backend = "stockade-fast" if _p50(results, "stockade-fast", "startup/hello") \
        is not None else "stockade"
    warm_us = _p50(results, warm_backend, "startup/hello")
    warm_us = None if warm_us is None else warm_us * 1000
    run_ratio = ratio(cold_start_ms(hello(results, "stockade-run")),
                      _p50(results, "python-import", "startup/hello"))
    python_ms = _p50(results, "stockade", "real/python")
    geo = compute_geomean(results, "stockade")
    isolated_geo = compute_geomean(results, "stockade-isolated")
    pulley_geo = compute_geomean(results, "pulley")
    io16 = io_ratios(results, "stockade").get(SIXTEEN_MIB)
    return [
        ClaimRow("goal", "warm fresh-instance hello in-process <= 30 µs",
                 f"{'fast path' if warm_backend == 'stockade-fast' else 'Stockade'} hello p50",
                 "n/a" if warm_us is None else f"{warm_us:.0f} µs",
                 _verdict(warm_us, 30.0)),
        ClaimRow("goal", "`stockade run hello.wasm` <= 1.0x `python -c \"import wasmtime\"` "
                 "(stretch 0.5x)",
                 "first output / import time, same run, interleaved rounds", _x(run_ratio),
                 _verdict(run_ratio, 1.0)),
        ClaimRow("goal", "CPython print(1) from the cache <= 60 ms in-process",
                 "Stockade warm p50", _ms(python_ms), _verdict(python_ms, 60.0)),
        ClaimRow("goal", "compute geometric mean <= 1.2x native (default profile)",
                 "Stockade hot loop / native, all kernels and sizes", _x(geo),
                 _verdict(geo, 1.2)),
        ClaimRow("goal", "compute geometric mean <= 1.2x native (default profile, isolated "
                 "worker)", "isolated worker hot loop / native (its process keeps the "
                 "deadline: no epochs)", _x(isolated_geo), _verdict(isolated_geo, 1.2)),
        gateway_row(results),
        ClaimRow("goal", "interpreted vs AoT ratio reported",
                 "Pulley / native and Stockade / native, compute geomean",
                 f"{_x(pulley_geo, 1)} vs {_x(geo)}", "reported"),
        ClaimRow("goal", "I/O overhead at 16 MiB <= 2x native",
                 "echo 16 MiB request to completion, Stockade / native", _x(io16),
                 _verdict(io16, 2.0)),
    ]

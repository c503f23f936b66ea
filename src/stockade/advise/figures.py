"""The numbers advice cites: published figures, each with its source, replaced by this
machine's own measurements where a `stockade bench` run (or the quick probe) has them.

A figure is cited by key from the rule table; the same key always means the same
quantity, whichever source filled it, so a reason reads the same with either.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ..bench.results import BenchResults

__all__ = ["Figure", "Figures", "PUBLISHED", "published", "from_results", "load_results",
           "ImplausibleResults", "results_source"]

# What a measured figure may be. A results file passes `stockade bench`'s own checks with
# any finite timing, so 1e308 ms over 1e-300 ms made a ratio of inf ("infx of native",
# `Infinity` in JSON): timings run from the clock's nanosecond to a day, ratios 1/1000x
# to 1000x (the slowest row of a committed run, TCG emulation, is 742x).
_MS_RANGE = (1e-6, 86_400_000.0)
_RATIO_RANGE = (1e-3, 1e3)


class ImplausibleResults(ValueError):
    """A results file whose values pass `stockade bench`'s checks but cannot be measured
    figures (the message names the field)."""


@dataclass(frozen=True)
class Figure:
    """One quantity: value, unit, what it is, and where it comes from."""

    key: str
    value: float
    unit: str
    label: str
    source: str
    measured: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):  # never "infx" in a reason, Infinity in JSON
            raise ValueError(f"figure {self.key}: {self.value} is not finite")

    def text(self) -> str:
        """The value with its unit, e.g. `125 ms` or `1.65x`."""
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "%":
            return f"{self.value:+.1f} %"
        if self.unit == "ms" and self.value < 1:
            return f"{self.value * 1000:.0f} µs"
        if self.value >= 100:
            return f"{self.value:.0f} {self.unit}"
        return f"{self.value:.3g} {self.unit}"

    def to_dict(self) -> dict[str, object]:
        """Plain data for `--json`."""
        return {"key": self.key, "value": self.value, "unit": self.unit, "label": self.label,
                "source": self.source, "measured": self.measured}


_FIRECRACKER = "Firecracker specification (SPECIFICATION.md)"
_EDERA = "Edera, arXiv:2501.04580 (v1)"
_LUMOS = "Lumos, arXiv:2510.05118"
_ISOLATION = "Wasm resource isolation, arXiv:2509.11242 (USENIX Security 2025)"
_SEED = "seed decision tree (2025 research summary)"
# The project's latest committed run: every figure it measured is cited from it alone,
# so no reason sets one machine's numbers against a paper's (a 41 ms `stockade run`
# against Docker's 177 ms, when the same run timed crun at 4.5 ms). Its microVM boot is
# TCG emulation (nested KVM stalls there), not a VM's cost: that one stays Firecracker's.
# tests/advise/test_rules.py checks these against the run's results.json.
_OURS = ("Stockade benchmark of 2026-12-07 (start-up), AMD EPYC, 2 cores: "
         "docs/benchmarks/2026-12-07-startup")

PUBLISHED: tuple[Figure, ...] = (
    Figure("vm.boot_ms", 125, "ms", "microVM boot to guest init", _FIRECRACKER),
    Figure("vm.overhead_mib", 5, "MiB", "memory overhead per microVM", _FIRECRACKER),
    Figure("vm.rate_per_s", 150, "VMs/s", "microVMs started per second per host", _FIRECRACKER),
    Figure("edera.startup_ms", 825, "ms", "Edera VM start-up (Docker 177 ms + 648 ms)", _EDERA),
    Figure("edera.cpu_pct", -0.9, "%", "VM CPU vs Docker", _EDERA),
    Figure("edera.memory_pct", 7, "%", "VM memory overhead vs Docker (upper bound)", _EDERA),
    Figure("wasm.cold_gain_pct", -16, "%", "AoT Wasm cold start vs containers (best case)",
           _LUMOS),
    Figure("wasm.image_ratio", 30, "x", "AoT Wasm image size advantage over containers (max)",
           _LUMOS),
    Figure("wasm.io_overhead", 10, "x", "interpreted Wasm I/O serialization overhead (max)",
           _LUMOS),
    Figure("wasm.cold_budget_ms", 50, "ms", "cold start that calls for WebAssembly", _SEED),
    Figure("wasm.warm_ms", 0.0142, "ms",
           "Stockade fresh instance per request (warm, in-process)", _OURS),
    Figure("wasm.cold_ms", 39.6, "ms", "`stockade run` hello, new process, AoT cache", _OURS),
    Figure("container.startup_ms", 5.37, "ms",
           "container (crun) hello, create to first output", _OURS),
    Figure("native.startup_ms", 0.371, "ms", "native process hello", _OURS),
    Figure("python.warm_ms", 26.2, "ms",
           "CPython for WASI print(1), fresh instance per request (warm, in-process)", _OURS),
    Figure("python.cold_ms", 96.4, "ms",
           "CPython for WASI print(1) as a new `stockade run` process, to first output",
           _OURS),
    Figure("python.native_ms", 7.88, "ms", "native CPython print(1), to first output", _OURS),
    Figure("wasm.compute_ratio", 1.10, "x",
           "Stockade compute time over native (geometric mean)", _OURS),
    Figure("wasm.io_ratio", 1.077, "x", "Stockade echo of 16 MiB over native", _OURS),
    Figure("wasm.kernel_attacks", 10, "kinds",
           "resource attacks that bypass Wasm's own limits (fsync storms, inode exhaustion, "
           "pseudo-terminals, entropy, ...)", _ISOLATION),
)


class Figures:
    """The figures of one piece of advice, by key; measured ones replace published ones."""

    def __init__(self, figures: tuple[Figure, ...] | list[Figure]) -> None:
        self._by_key = {figure.key: figure for figure in figures}

    def get(self, key: str) -> Figure | None:
        """The figure called `key`, or None."""
        return self._by_key.get(key)

    def with_measured(self, measured: list[Figure]) -> Figures:
        """These figures with `measured` ones added or replacing published ones."""
        return Figures([*self._by_key.values(), *measured])

    @property
    def measured(self) -> bool:
        """True when any figure comes from this machine."""
        return any(figure.measured for figure in self._by_key.values())

    def all(self) -> list[Figure]:
        """Every figure, in key order."""
        return [self._by_key[key] for key in sorted(self._by_key)]


def published() -> Figures:
    """The published figures only."""
    return Figures(PUBLISHED)


def load_results(path: Path) -> BenchResults:
    """A saved `stockade bench` run. Raises UsageError for a missing, foreign or
    malformed file (naming what is wrong)."""
    import json

    from ..bench.results import BenchResults, MalformedResults

    try:
        return BenchResults.load(path)
    except FileNotFoundError:
        raise UsageError(f"--results: {path}: no such file") from None
    except MalformedResults as exc:
        raise UsageError(f"--results: {path}: not a results.json written by `stockade "
                         f"bench`: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        kind = "not JSON" if isinstance(exc, json.JSONDecodeError) else "not a results.json"
        raise UsageError(f"--results: {path}: {kind} written by `stockade bench`") from None


def results_source(results: BenchResults, path: str) -> str:
    """How a results file is cited: its path, with the date and machine its meta gives
    (values from the file: shown only when short, printable and of the expected kind)."""
    meta: Any = results.meta
    machine = meta.get("machine") if isinstance(meta.get("machine"), dict) else {}
    started, cpu, cores = meta.get("started"), machine.get("cpu"), machine.get("cores")
    parts = []
    if isinstance(started, str) and re.match(r"\d{4}-\d{2}-\d{2}", started):
        parts.append(f"stockade bench of {started[:10]}")
    if isinstance(cpu, str) and 0 < len(cpu) <= 80 and cpu.isprintable():
        parts.append(cpu)
    if isinstance(cores, int) and not isinstance(cores, bool) and 0 < cores < 100_000:
        parts.append(f"{cores} core{'s' if cores > 1 else ''}")
    return f"{path} ({', '.join(parts)})" if parts else path


def _check_timings(results: BenchResults) -> None:
    for i, measurement in enumerate(results.measurements):
        for metric, values in measurement.metrics.items():
            if not metric.endswith("_ms"):
                continue
            for j, value in enumerate(values):
                if value != 0 and not _MS_RANGE[0] <= value <= _MS_RANGE[1]:
                    raise ImplausibleResults(
                        f"measurements[{i}].metrics.{metric:.20}[{j}]: {value:.3g} ms is not "
                        "a plausible timing (1 ns to a day)")


def from_results(results: BenchResults, source: str) -> list[Figure]:
    """The figures a benchmark run measured (a `BenchResults`), labelled with `source`.
    Raises ImplausibleResults, naming the field, for a timing or a figure out of range."""
    from ..bench.derive import cold_start_ms, compute_geomean, hello, io_ratios

    _check_timings(results)
    found: list[Figure] = []

    def add(key: str, value: float | None, unit: str, label: str) -> None:
        if value is None:
            return
        low, high = _RATIO_RANGE if unit == "x" else _MS_RANGE
        if not (math.isfinite(value) and low <= value <= high):
            raise ImplausibleResults(f"{key} ({label}): {value:.3g} {unit} is not a "
                                     "plausible figure")
        found.append(Figure(key, value, unit, label, source, measured=True))

    warm = hello(results, "stockade-fast") or hello(results, "stockade")
    add("wasm.warm_ms", warm.p50() if warm else None, "ms",
        "Stockade fresh instance per request (warm, in-process)")
    add("wasm.cold_ms", cold_start_ms(hello(results, "stockade-run")), "ms",
        "`stockade run` hello, new process, AoT cache")
    add("container.startup_ms", cold_start_ms(hello(results, "crun")), "ms",
        "container (crun) hello, create to first output")
    add("native.startup_ms", cold_start_ms(hello(results, "native")), "ms",
        "native process hello")
    # CPython's print(1): what a Python workload's cold start is, in each form.
    python = results.get("stockade-fast", _PYTHON) or results.get("stockade", _PYTHON)
    add("python.warm_ms", python.p50() if python else None, "ms",
        "CPython for WASI print(1), fresh instance per request (warm, in-process)")
    add("python.cold_ms", cold_start_ms(results.get("stockade-run", _PYTHON)), "ms",
        "CPython for WASI print(1) as a new `stockade run` process, to first output")
    add("python.native_ms", cold_start_ms(results.get("native", _PYTHON)), "ms",
        "native CPython print(1), to first output")
    add("vm.boot_ms", cold_start_ms(hello(results, "vm")), "ms",
        _vm_label(results, "microVM (QEMU) boot to first output"))
    add("wasm.compute_ratio", compute_geomean(results, "stockade"), "x",
        "Stockade compute time over native (geometric mean)")
    add("vm.compute_ratio", compute_geomean(results, "vm-warm"), "x",
        _vm_label(results, "microVM compute time over native (geometric mean)"))
    io = io_ratios(results, "stockade")
    if io:
        size = max(io)
        add("wasm.io_ratio", io[size], "x",
            f"Stockade echo of {size >> 20 or size >> 10} {'MiB' if size >> 20 else 'KiB'} "
            "over native")
    return found


_PYTHON = "real/python"


def _vm_label(results: BenchResults, label: str) -> str:
    info = results.backend("vm")
    if info is not None and "TCG" in (info.note or ""):
        return f"{label} (TCG emulation: not a VM's cost on real hardware)"
    return label

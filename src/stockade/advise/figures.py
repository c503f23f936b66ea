"""The numbers advice cites: published figures, each with its source, replaced by this
machine's own measurements where a `stockade bench` run (or the quick probe) has them.

A figure is cited by key from the rule table; the same key always means the same
quantity, whichever source filled it, so a reason reads the same with either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..bench.results import BenchResults

__all__ = ["Figure", "Figures", "PUBLISHED", "published", "from_results", "load_results"]


@dataclass(frozen=True)
class Figure:
    """One quantity: value, unit, what it is, and where it comes from."""

    key: str
    value: float
    unit: str
    label: str
    source: str
    measured: bool = False

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
# The project's own committed run: cited when the user has no results of their own.
_OURS = "Stockade benchmark of 2026-12-01, 2-core VM (docs/benchmarks/2026-12-01)"

PUBLISHED: tuple[Figure, ...] = (
    Figure("vm.boot_ms", 125, "ms", "microVM boot to guest init", _FIRECRACKER),
    Figure("vm.overhead_mib", 5, "MiB", "memory overhead per microVM", _FIRECRACKER),
    Figure("vm.rate_per_s", 150, "VMs/s", "microVMs started per second per host", _FIRECRACKER),
    Figure("edera.startup_ms", 825, "ms", "Edera VM start-up (Docker 177 ms + 648 ms)", _EDERA),
    Figure("container.startup_ms", 177, "ms", "Docker container start-up", _EDERA),
    Figure("edera.cpu_pct", -0.9, "%", "VM CPU vs Docker", _EDERA),
    Figure("edera.memory_pct", 7, "%", "VM memory overhead vs Docker (upper bound)", _EDERA),
    Figure("wasm.cold_gain_pct", -16, "%", "AoT Wasm cold start vs containers (best case)",
           _LUMOS),
    Figure("wasm.image_ratio", 30, "x", "AoT Wasm image size advantage over containers (max)",
           _LUMOS),
    Figure("wasm.io_overhead", 10, "x", "interpreted Wasm I/O serialization overhead (max)",
           _LUMOS),
    Figure("wasm.cold_budget_ms", 50, "ms", "cold start that calls for WebAssembly", _SEED),
    Figure("wasm.warm_ms", 0.044, "ms", "Stockade fresh instance per request (warm)", _OURS),
    Figure("wasm.cold_ms", 87.7, "ms", "`stockade run` hello, new process, AoT cache", _OURS),
    Figure("wasm.compute_ratio", 1.65, "x", "Stockade compute time over native (geomean)",
           _OURS),
    Figure("wasm.io_ratio", 0.85, "x", "Stockade echo of 16 MiB over native", _OURS),
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


def from_results(results: BenchResults, source: str) -> list[Figure]:
    """The figures a benchmark run measured (a `BenchResults`), labelled with `source`."""
    from ..bench.derive import cold_start_ms, compute_geomean, hello, io_ratios

    found: list[Figure] = []

    def add(key: str, value: float | None, unit: str, label: str) -> None:
        if value is not None:
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


def _vm_label(results: BenchResults, label: str) -> str:
    info = results.backend("vm")
    if info is not None and "TCG" in (info.note or ""):
        return f"{label} (TCG emulation: not a VM's cost on real hardware)"
    return label

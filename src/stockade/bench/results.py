"""Benchmark results as data: `Measurement` per (backend, workload), `BenchResults` for a run.

Everything the report and the charts show is computed from this, and it round-trips
through results.json, so a report can be regenerated from a saved run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hosts.base import Sample
from .stats import Summary

__all__ = ["Measurement", "BackendInfo", "BenchResults", "METRICS", "MalformedResults"]

# metric name -> what it is (all from recorded, post-warm-up, successful samples)
METRICS = {
    "wall_ms": "request to completion, ms",
    "first_ms": "request to first output byte (process backends), ms",
    "cpu_ms": "user + system CPU time, ms",
    "rss_kb": "peak resident set of the process that ran the guest, KiB",
    "hot_ms": "the guest's own timing of its hot loop, ms",
}


MAX_RESULTS = 64 * 1024**2  # bytes of a results.json read (a full run writes ~1 MB)


class MalformedResults(ValueError):
    """A results.json that does not hold what `stockade bench` writes; says where."""


def _round(value: float) -> float:
    return float(f"{value:.5g}")


@dataclass
class Measurement:
    """Samples of one backend on one workload: metric lists, output digests, failures."""

    backend: str
    workload: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    digests: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    error: str = ""

    def add(self, sample: Sample) -> None:
        """Record one sample (failed samples only count, with the first error kept)."""
        if not sample.ok:
            self.failures += 1
            self.error = self.error or sample.error
            return
        values = {"wall_ms": sample.wall_ms, "first_ms": sample.first_ms,
                  "cpu_ms": sample.cpu_ms, "rss_kb": sample.rss_kb,
                  "hot_ms": None if sample.hot_ns is None else sample.hot_ns / 1e6}
        for name, value in values.items():
            if value is not None:
                self.metrics.setdefault(name, []).append(_round(float(value)))
        self.digests[sample.digest] += 1

    @property
    def count(self) -> int:
        """Successful recorded samples."""
        return len(self.metrics.get("wall_ms", []))

    def summary(self, metric: str = "wall_ms") -> Summary | None:
        """Statistics of one metric, or None without samples."""
        values = self.metrics.get(metric)
        return Summary.of(values) if values else None

    def p50(self, metric: str = "wall_ms") -> float | None:
        """Median of one metric, or None."""
        found = self.summary(metric)
        return None if found is None else found.p50

    def digest(self) -> str | None:
        """The most common output digest, or None."""
        return self.digests.most_common(1)[0][0] if self.digests else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data: raw metric lists plus their summaries."""
        return {"backend": self.backend, "workload": self.workload,
                "metrics": self.metrics, "digests": dict(self.digests),
                "failures": self.failures, "error": self.error,
                "summary": {m: s.to_dict() for m in self.metrics
                            if (s := self.summary(m)) is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Inverse of `to_dict` (summaries are recomputed)."""
        return cls(backend=data["backend"], workload=data["workload"],
                   metrics={k: list(v) for k, v in data["metrics"].items()},
                   digests=Counter(data["digests"]), failures=data["failures"],
                   error=data["error"])


@dataclass
class BackendInfo:
    """A backend as the report shows it; `skipped` is the reason it did not run."""

    name: str
    title: str
    kind: str
    note: str = ""
    skipped: str | None = None
    reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return dict(self.__dict__)


@dataclass
class BenchResults:
    """One benchmark run."""

    meta: dict[str, Any]
    backends: list[BackendInfo]
    workloads: list[dict[str, Any]]
    measurements: list[Measurement] = field(default_factory=list)
    artifacts: dict[str, int] = field(default_factory=dict)
    skipped_workloads: dict[str, str] = field(default_factory=dict)
    # The gateway's ratio to its server's ceiling (`gatewayload.measure_ratios`), or
    # {"skipped": reason}; empty in results saved before it was measured.
    gateway: dict[str, Any] = field(default_factory=dict)

    def get(self, backend: str, workload: str) -> Measurement | None:
        """The measurement of a backend on a workload, or None."""
        for found in self.measurements:
            if found.backend == backend and found.workload == workload:
                return found
        return None

    def backend(self, name: str) -> BackendInfo | None:
        """Backend info by name."""
        return next((b for b in self.backends if b.name == name), None)

    def ran(self) -> list[BackendInfo]:
        """Backends that were not skipped, in catalogue order."""
        return [b for b in self.backends if b.skipped is None]

    def workload(self, key: str) -> dict[str, Any] | None:
        """Workload description by key."""
        return next((w for w in self.workloads if w["key"] == key), None)

    def agreement(self) -> dict[str, dict[str, str]]:
        """Workloads whose backends disagree: key -> {backend: digest}. Empty when all agree.

        Reference backends (which run a different program) are left out.
        """
        reference = {b.name for b in self.backends if b.reference}
        disagree: dict[str, dict[str, str]] = {}
        for workload in self.workloads:
            seen = {m.backend: d for m in self.measurements
                    if m.workload == workload["key"] and m.backend not in reference
                    and (d := m.digest()) is not None}
            if len(set(seen.values())) > 1:
                disagree[workload["key"]] = seen
        return disagree

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results.json."""
        return {"meta": self.meta, "backends": [b.to_dict() for b in self.backends],
                "workloads": self.workloads, "artifacts": self.artifacts,
                "skipped_workloads": self.skipped_workloads, "gateway": self.gateway,
                "measurements": [m.to_dict() for m in self.measurements]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResults:
        """Inverse of `to_dict`."""
        return cls(meta=data["meta"], backends=[BackendInfo(**b) for b in data["backends"]],
                   workloads=data["workloads"], artifacts=data["artifacts"],
                   skipped_workloads=data.get("skipped_workloads", {}),
                   gateway=data.get("gateway", {}),
                   measurements=[Measurement.from_dict(m) for m in data["measurements"]])

    def save(self, path: Path) -> None:
        """Write results.json (whole, through no link: `regularfile.replace_file`;
        raises OSError for anything at `path` but a regular file)."""
        from ..regularfile import replace_file

        text = json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"
        replace_file(path, text.encode(), mode=None)

    @classmethod
    def load(cls, path: Path) -> BenchResults:
        """Read results.json. Raises OSError, ValueError for text that is not JSON, or
        MalformedResults naming the first field that is not what `stockade bench` writes
        (a timing that is not a finite, non-negative number included)."""
        from ..regularfile import read_regular

        text = read_regular(path, MAX_RESULTS + 1, follow=True)
        if len(text) > MAX_RESULTS:
            raise MalformedResults(f"larger than {MAX_RESULTS // 1024**2} MiB")
        try:
            data: Any = json.loads(text)
        except RecursionError:  # arrays nested 200,000 deep
            raise MalformedResults("nested too deeply") from None
        _check_results(data)
        return cls.from_dict(data)


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):  # JSON true is no count
        raise MalformedResults(f"{where}: {value!r:.40} is not {what}")


def _check_results(data: Any) -> None:
    """Raise MalformedResults unless `data` has the shape `BenchResults.to_dict` writes,
    as far as reading it back and deriving figures from it needs."""
    _expect(data, dict, "the file", "an object")
    for key, kind, what in (("meta", dict, "an object"), ("backends", list, "a list"),
                            ("workloads", list, "a list"), ("artifacts", dict, "an object"),
                            ("measurements", list, "a list"),
                            ("skipped_workloads", dict, "an object"),
                            ("gateway", dict, "an object")):
        if key not in data:
            if key in ("skipped_workloads", "gateway"):  # older runs lack them
                continue
            raise MalformedResults(f"no {key!r}")
        _expect(data[key], kind, key, what)
    fields = set(BackendInfo.__dataclass_fields__)
    for i, backend in enumerate(data["backends"]):
        where = f"backends[{i}]"
        _expect(backend, dict, where, "an object")
        unknown = set(backend) - fields
        if unknown or not {"name", "title", "kind"} <= set(backend):
            raise MalformedResults(f"{where}: not a backend (fields {sorted(backend)})")
        _expect(backend["name"], str, f"{where}.name", "a string")
    for i, workload in enumerate(data["workloads"]):
        where = f"workloads[{i}]"
        _expect(workload, dict, where, "an object")
        for key in ("key", "group"):
            _expect(workload.get(key), str, f"{where}.{key}", "a string")
        if workload["group"] == "io":
            size = workload["key"].rsplit("/", 1)[-1]
            if not size.isdigit():
                raise MalformedResults(f"{where}.key: {workload['key']!r:.40} does not end "
                                       "in a payload size")
    for i, measurement in enumerate(data["measurements"]):
        _check_measurement(measurement, f"measurements[{i}]")


def _check_measurement(measurement: Any, where: str) -> None:
    _expect(measurement, dict, where, "an object")
    for key in ("backend", "workload", "error"):
        _expect(measurement.get(key), str, f"{where}.{key}", "a string")
    _expect(measurement.get("failures"), int, f"{where}.failures", "a count")
    _expect(measurement.get("digests"), dict, f"{where}.digests", "an object")
    for digest, count in measurement["digests"].items():
        _expect(count, int, f"{where}.digests.{digest:.20}", "a count")
    _expect(measurement.get("metrics"), dict, f"{where}.metrics", "an object")
    for metric, values in measurement["metrics"].items():
        _expect(values, list, f"{where}.metrics.{metric:.20}", "a list")
        for j, value in enumerate(values):
            spot = f"{where}.metrics.{metric:.20}[{j}]"
            _expect(value, (int, float), spot, "a number")
            if isinstance(value, int) and abs(value) > 2**63:  # isfinite() of 10**400 raises
                raise MalformedResults(f"{spot}: a number of {len(str(abs(value)))} digits")
            if not math.isfinite(value):
                raise MalformedResults(f"{spot}: {value} is not a finite number")
            if value < 0:
                raise MalformedResults(f"{spot}: {value} is negative (times and sizes "
                                       "cannot be)")

"""Delta aggregation of the invocation metrics for the local file sink.

Between two flushes, each (function name, outcome) pair has one row holding every
instrument of `instruments.py` (one dictionary lookup per invocation, not one per
metric); violations are counted per (function name, kind). `drain` returns them as
OTLP/JSON `Metric` objects with delta temporality (each line of the file covers its
own time window, so a reader adds them up) and starts over.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import TYPE_CHECKING, Any

from .instruments import COUNTERS, HISTOGRAMS, VIOLATIONS
from .otlpjson import key_values

if TYPE_CHECKING:
    from .record import InvocationRecord

__all__ = ["DeltaAggregator", "TEMPORALITY_DELTA"]

TEMPORALITY_DELTA = 1
_BOUNDS = tuple(h.bounds for h in HISTOGRAMS)


class _Row:
    """All instruments for one attribute set: histograms as [count, sum, min, max, buckets]."""

    __slots__ = ("histograms", "counters")

    def __init__(self) -> None:
        self.histograms: list[list[Any]] = [
            [0, 0.0, float("inf"), float("-inf"), [0] * (len(b) + 1)] for b in _BOUNDS]
        self.counters = [0] * len(COUNTERS)


class DeltaAggregator:
    """Thread-safe accumulator of `InvocationRecord` metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], _Row] = {}
        self._violations: dict[tuple[str, str], int] = {}
        self._start_ns = time.time_ns()

    def __len__(self) -> int:
        return len(self._rows) + len(self._violations)

    def add(self, record: InvocationRecord) -> None:
        """Add one invocation's measurements."""
        values = (record.wall_s, record.cpu_ms / 1000, float(record.peak_memory))
        key = (record.metric_name, record.outcome)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = _Row()
            for histogram, value, bounds in zip(row.histograms, values, _BOUNDS, strict=True):
                histogram[0] += 1
                histogram[1] += value
                histogram[2] = min(histogram[2], value)
                histogram[3] = max(histogram[3], value)
                histogram[4][bisect.bisect_left(bounds, value)] += 1
            counters = row.counters
            counters[0] += 1
            counters[1] += record.coldstart
            counters[2] += record.fuel_consumed
            counters[3] += record.files_created
            counters[4] += record.bytes_written
            counters[5] += record.warnings
            if record.violation:
                self._violations[key] = self._violations.get(key, 0) + 1

    def drain(self) -> list[dict[str, Any]]:
        """The OTLP/JSON `Metric` list since the last drain (empty when nothing was added)."""
        now = time.time_ns()
        with self._lock:
            rows, self._rows = self._rows, {}
            violations, self._violations = self._violations, {}
            start, self._start_ns = self._start_ns, now
        if not rows and not violations:
            return []
        times = {"startTimeUnixNano": str(start), "timeUnixNano": str(now)}
        metrics = []
        for index, instrument in enumerate(HISTOGRAMS):
            points = []
            for (name, outcome), row in rows.items():
                count, total, low, high, buckets = row.histograms[index]
                points.append({
                    "attributes": key_values({"faas.name": name, "stockade.outcome": outcome}),
                    **times, "count": str(count), "sum": total,
                    "bucketCounts": [str(c) for c in buckets],
                    "explicitBounds": list(instrument.bounds), "min": low, "max": high,
                })
            metrics.append(_metric(instrument.name, instrument.unit, instrument.description,
                                   "histogram", points))
        for index, instrument in enumerate(COUNTERS):
            points = [{
                "attributes": key_values({"faas.name": name, "stockade.outcome": outcome}),
                **times, "asInt": str(row.counters[index]),
            } for (name, outcome), row in rows.items() if row.counters[index]]
            if points:
                metrics.append(_metric(instrument.name, instrument.unit,
                                       instrument.description, "sum", points))
        if violations:
            points = [{
                "attributes": key_values({"faas.name": name, "stockade.violation.kind": kind}),
                **times, "asInt": str(count),
            } for (name, kind), count in violations.items()]
            metrics.append(_metric(VIOLATIONS.name, VIOLATIONS.unit, VIOLATIONS.description,
                                   "sum", points))
        return metrics


def _metric(name: str, unit: str, description: str, kind: str,
            points: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {"dataPoints": points, "aggregationTemporality": TEMPORALITY_DELTA}
    if kind == "sum":
        data["isMonotonic"] = True
    return {"name": name, "unit": unit, "description": description, kind: data}

"""Delta aggregation of the invocation metrics for the local file sink.

Between two flushes, each (function name, outcome) pair has one row holding every
instrument of `instruments.py`; violations are counted per (function name, kind). An
invocation only appends its figures to its pair's list; every `FOLD` invocations, and
at `drain`, the list is folded into the row in bulk (sums, minima and maxima by the
builtins: a gateway records thousands of invocations a second). `drain` returns the rows
as OTLP/JSON `Metric` objects with delta temporality (each line of the file covers its
own time window, so a reader adds them up) and starts over.
"""

from __future__ import annotations

import bisect
import threading
import time
from itertools import repeat

from .instruments import COUNTERS, HISTOGRAMS, VIOLATIONS
from .otlpjson import key_values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..result import Usage
    from .record import InvocationRecord

__all__ = ["DeltaAggregator", "TEMPORALITY_DELTA", "FOLD"]

TEMPORALITY_DELTA = 1
FOLD = 256  # invocations appended before they are folded into their row
_BOUNDS = tuple(h.bounds for h in HISTOGRAMS)
# One invocation's figures: the three histogram values, then the counters' increments
# (invocations is implied) in the order of COUNTERS[1:].
Observation = tuple[float, float, float, int, int, int, int, int]


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
        self._pending: dict[tuple[str, str], list[Observation]] = {}
        self._violations: dict[tuple[str, str], int] = {}
        self._start_ns = time.time_ns()

    def __len__(self) -> int:
        return len(self._rows) + len(self._pending) + len(self._violations)

    def add(self, record: InvocationRecord) -> None:
        """Add one invocation's measurements."""
        observation = (record.wall_s, record.cpu_ms / 1000, float(record.peak_memory),
                       int(record.coldstart), record.fuel_consumed or 0, record.files_created,
                       record.bytes_written, record.warnings)
        self._add((record.metric_name, record.outcome), observation, record.violation)

    def add_usage(self, metric_name: str, outcome: str, usage: Usage, coldstart: bool) -> None:
        """Add the measurements of a run without monitor warnings or a violation, from its
        usage alone (what `add` takes from the record, without building one)."""
        self._add((metric_name, outcome), (
            usage.wall_ms / 1000, usage.cpu_ms / 1000, float(usage.peak_memory_bytes),
            int(coldstart), usage.fuel_consumed or 0, usage.files_created, usage.bytes_written, 0,
        ), False)

    def _add(self, key: tuple[str, str], observation: Observation, violation: bool) -> None:
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = []
            pending.append(observation)
            if violation:
                self._violations[key] = self._violations.get(key, 0) + 1
            if len(pending) >= FOLD:
                self._fold(key, pending)
                self._pending[key] = []

    def _fold(self, key: tuple[str, str], observations: list[Observation]) -> None:
        """Add `observations` to the row of `key` (the lock is held)."""
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row()
        columns = list(zip(*observations, strict=True))
        count = len(observations)
        for histogram, values, bounds in zip(row.histograms, columns, _BOUNDS, strict=False):
            histogram[0] += count
            histogram[1] += sum(values)
            histogram[2] = min(histogram[2], min(values))
            histogram[3] = max(histogram[3], max(values))
            buckets = histogram[4]
            for index in map(bisect.bisect_left, repeat(bounds), values):
                buckets[index] += 1
        counters = row.counters
        counters[0] += count
        for index, values in enumerate(columns[len(_BOUNDS):], start=1):
            counters[index] += sum(values)

    def drain(self) -> list[dict[str, Any]]:
        """The OTLP/JSON `Metric` list since the last drain (empty when nothing was added)."""
        now = time.time_ns()
        with self._lock:
            for key, pending in self._pending.items():
                self._fold(key, pending)
            self._pending = {}
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

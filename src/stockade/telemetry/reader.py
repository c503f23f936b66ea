"""Read the local OTLP-JSON file back: recent invocations, outcomes, durations, violations.

Counts come from the metrics (never sampled); recent invocations and duration
percentiles come from the spans (sampled at the profile's ratio). Lines that are not
OTLP/JSON are counted and skipped.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .record import MONITOR_WARNING

__all__ = ["InvocationRow", "Summary", "read_summary", "attributes_of", "percentile"]


@dataclass(frozen=True)
class InvocationRow:
    """One invocation as read from its span. `start_ns` is ns since the epoch."""

    start_ns: int
    name: str
    outcome: str
    duration_ms: float
    invocation_id: str
    sha256: str
    limit_hit: str
    warnings: int


@dataclass
class Summary:
    """What the file holds. Percentiles are in milliseconds (None without spans)."""

    path: Path
    lines: int = 0
    bad_lines: int = 0
    spans: int = 0
    invocations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    recent: list[InvocationRow] = field(default_factory=list)


def attributes_of(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A plain dict from an OTLP/JSON `KeyValue` list (ints decoded from strings)."""
    out: dict[str, Any] = {}
    for item in items or ():
        value = item.get("value", {})
        for kind, raw in value.items():
            out[item["key"]] = int(raw) if kind == "intValue" else raw
    return out


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _spans(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for rs in request.get("resourceSpans", ())
            for ss in rs.get("scopeSpans", ()) for span in ss.get("spans", ())]


def _points(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for rm in request.get("resourceMetrics", ()):
        for sm in rm.get("scopeMetrics", ()):
            for metric in sm.get("metrics", ()):
                data = metric.get("sum") or metric.get("histogram") or {}
                out.extend((metric["name"], p) for p in data.get("dataPoints", ()))
    return out


def read_summary(path: Path | str, recent: int = 10) -> Summary:
    """Summarise the telemetry file at `path`, keeping the `recent` latest invocations.
    Raises OSError when the file cannot be read."""
    summary = Summary(Path(path))
    durations: list[float] = []
    latest: deque[InvocationRow] = deque(maxlen=max(recent, 1))
    span_outcomes: Counter[str] = Counter()
    with open(path, "rb") as file:
        for line in file:
            summary.lines += 1
            try:
                request = json.loads(line)
            except ValueError:
                summary.bad_lines += 1
                continue
            for span in _spans(request):
                attrs = attributes_of(span.get("attributes"))
                start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
                row = InvocationRow(
                    start, span.get("name", ""), str(attrs.get("stockade.outcome", "?")),
                    (end - start) / 1e6, str(attrs.get("faas.invocation_id", "")),
                    str(attrs.get("stockade.module.sha256", "")),
                    str(attrs.get("stockade.limit.hit", "none")),
                    sum(1 for e in span.get("events", ()) if e.get("name") == MONITOR_WARNING),
                )
                summary.spans += 1
                durations.append(row.duration_ms)
                span_outcomes[row.outcome] += 1
                latest.append(row)
            for name, point in _points(request):
                attrs = attributes_of(point.get("attributes"))
                value = int(point.get("asInt", 0))
                if name == "faas.invocations":
                    summary.outcomes[str(attrs.get("stockade.outcome"))] += value
                    summary.invocations += value
                elif name == "stockade.violations":
                    summary.violations[str(attrs.get("stockade.violation.kind"))] += value
                elif name == "stockade.monitor.warnings":
                    summary.warnings += value
    if not summary.invocations:
        summary.outcomes = span_outcomes
        summary.invocations = summary.spans
    summary.p50_ms = percentile(durations, 0.50)
    summary.p99_ms = percentile(durations, 0.99)
    summary.recent = sorted(latest, key=lambda r: r.start_ns, reverse=True)[:recent]
    return summary

"""Read the local OTLP-JSON file back: invocations, outcomes, durations, rejections,
violations and monitor warnings, optionally filtered.

Counts come from the metrics (never sampled) when no filter is given; recent
invocations, duration percentiles, warnings and filtered counts come from the spans
(sampled at the profile's ratio). An invocation span carries `faas.invocation_id`; the
gateway's HTTP server spans do not, and are read only for the requests the gateway
refused before any guest ran (`REJECTED`: 408, 413, 429, 503), which are counted apart
from the latency percentiles, as are invocations refused up front (outcome `denied`).
Lines that are not OTLP/JSON are counted and skipped.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .record import MONITOR_WARNING

__all__ = ["InvocationRow", "Rejection", "Warning_", "Filters", "Summary", "read_summary",
           "attributes_of", "percentile", "rows_of", "REJECTED"]

REJECTED = (408, 413, 429, 503)  # HTTP statuses the gateway answers without a guest
_REFUSED_OUTCOMES = ("denied",)  # invocations stopped before the guest ran


@dataclass(frozen=True)
class Warning_:
    """A monitor warning recorded on an invocation: `kind` at `ratio` of its limit."""

    kind: str
    value: float
    limit: float
    ratio: float


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
    tenant: str = ""
    warning_list: tuple[Warning_, ...] = ()


@dataclass(frozen=True)
class Rejection:
    """A request the gateway answered without running its function."""

    start_ns: int
    name: str
    status: int


@dataclass(frozen=True)
class Filters:
    """Which invocations to keep: by function name, tenant, outcome, and start time
    (`since_ns`, ns since the epoch); None keeps all."""

    function: str | None = None
    tenant: str | None = None
    outcome: str | None = None
    since_ns: int | None = None

    @property
    def active(self) -> bool:
        """True when any filter is set."""
        return any(v is not None for v in (self.function, self.tenant, self.outcome,
                                           self.since_ns))

    def keeps(self, row: InvocationRow | Rejection) -> bool:
        """Whether `row` passes every filter (a rejection has no tenant or outcome of an
        invocation: it passes those only when they are not set)."""
        if self.since_ns is not None and row.start_ns < self.since_ns:
            return False
        if self.function is not None and row.name != self.function:
            return False
        if isinstance(row, Rejection):
            return self.tenant is None and self.outcome in (None, "rejected")
        if self.tenant is not None and row.tenant != self.tenant:
            return False
        return self.outcome is None or row.outcome == self.outcome


@dataclass
class Summary:
    """What the file holds. Percentiles are in milliseconds over invocations whose guest
    ran (None without any)."""

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
    rejections: Counter[str] = field(default_factory=Counter)  # "function 429" -> count
    warned: list[InvocationRow] = field(default_factory=list)  # latest with warnings


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


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _row(span: dict[str, Any]) -> InvocationRow | Rejection | None:
    """The span as an invocation, a rejection, or None (any other span)."""
    attrs = attributes_of(span.get("attributes"))
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    if "faas.invocation_id" not in attrs:
        status = attrs.get("http.response.status_code")
        if isinstance(status, int) and status in REJECTED:
            return Rejection(start, str(attrs.get("faas.name", "")), status)
        return None
    warnings = tuple(
        Warning_(str(a.get("stockade.warning.kind", "?")), _number(a.get("stockade.warning.value")),
                 _number(a.get("stockade.warning.limit")),
                 _number(a.get("stockade.warning.ratio")))
        for a in (attributes_of(e.get("attributes")) for e in span.get("events", ())
                  if e.get("name") == MONITOR_WARNING))
    return InvocationRow(
        start, str(attrs.get("faas.name", span.get("name", ""))),
        str(attrs.get("stockade.outcome", "?")), (end - start) / 1e6,
        str(attrs.get("faas.invocation_id", "")), str(attrs.get("stockade.module.sha256", "")),
        str(attrs.get("stockade.limit.hit", "none")), len(warnings),
        str(attrs.get("stockade.tenant", "")), warnings)


def rows_of(line: bytes) -> Iterator[InvocationRow | Rejection]:
    """The invocations and rejections in one line of the file (none for a bad line)."""
    try:
        request = json.loads(line)
    except ValueError:
        return
    if isinstance(request, dict):
        yield from _rows(request)


def _rows(request: dict[str, Any]) -> Iterator[InvocationRow | Rejection]:
    for span in _spans(request):
        try:
            row = _row(span)
        except (KeyError, TypeError, ValueError):
            continue
        if row is not None:
            yield row


def read_summary(path: Path | str, recent: int = 10, filters: Filters | None = None
                 ) -> Summary:
    """Summarise the telemetry file at `path`, keeping the `recent` latest invocations
    that pass `filters`. Raises OSError when the file cannot be read."""
    with open(path, "rb") as file:
        return summarise(file, Path(path), recent, filters or Filters())


def summarise(lines: Iterable[bytes], path: Path, recent: int, filters: Filters) -> Summary:
    """`read_summary` over lines already opened."""
    summary = Summary(path)
    durations: list[float] = []
    latest: deque[InvocationRow] = deque(maxlen=max(recent, 1))
    warned: deque[InvocationRow] = deque(maxlen=max(recent, 1))
    span_outcomes: Counter[str] = Counter()
    span_warnings = 0
    for line in lines:
        summary.lines += 1
        try:
            request = json.loads(line)
        except ValueError:
            summary.bad_lines += 1
            continue
        if not isinstance(request, dict):
            summary.bad_lines += 1
            continue
        for row in _rows(request):
            if not filters.keeps(row):
                continue
            if isinstance(row, Rejection):
                summary.rejections[f"{row.name or '-'} {row.status}"] += 1
                continue
            summary.spans += 1
            span_outcomes[row.outcome] += 1
            span_warnings += row.warnings
            if row.outcome in _REFUSED_OUTCOMES:
                summary.rejections[f"{row.name} {row.outcome}"] += 1
            else:
                durations.append(row.duration_ms)
            if filters.active and row.limit_hit not in ("none", ""):
                summary.violations[row.limit_hit] += 1
            latest.append(row)
            if row.warnings:
                warned.append(row)
        if filters.active:
            continue  # metrics cannot be filtered by tenant or time: spans count
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
        summary.warnings = max(summary.warnings, span_warnings)
    summary.p50_ms = percentile(durations, 0.50)
    summary.p99_ms = percentile(durations, 0.99)
    summary.recent = sorted(latest, key=lambda r: r.start_ns, reverse=True)[:recent]
    summary.warned = sorted(warned, key=lambda r: r.start_ns, reverse=True)
    return summary

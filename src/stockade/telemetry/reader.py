"""Read the local OTLP-JSON file back: invocations, outcomes, durations, rejections,
violations and monitor warnings, optionally filtered.

Counts come from the metrics (never sampled) when no filter is given; recent
invocations, duration percentiles, warnings and filtered counts come from the spans
(sampled at the profile's ratio); the percentiles are exact up to `EXACT_LIMIT` spans,
then within `RELATIVE_ERROR` of exact, in memory that does not grow with the file
(`quantiles.Quantiles`). An invocation span carries `faas.invocation_id`; the
gateway's HTTP server spans do not, and are read only for the requests the gateway
refused before any guest ran (`REJECTED`: 408, 413, 429, 503), which are counted apart
from the latency percentiles, as are invocations refused up front (outcome `denied`).
Lines that are not OTLP/JSON of the shape the file sink writes (wrong types at any
level, missing keys, numbers out of range, too deep, not UTF-8, longer than
MAX_LINE_BYTES) are counted and skipped whole.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..regularfile import open_regular
from .quantiles import EXACT_LIMIT, RELATIVE_ERROR, Quantiles, percentile
from .record import MONITOR_WARNING

__all__ = ["InvocationRow", "Rejection", "Warning_", "Filters", "Summary", "read_summary",
           "attributes_of", "percentile", "rows_of", "REJECTED", "BadLine", "LineSplitter",
           "read_lines", "open_file", "MAX_LINE_BYTES", "MAX_RECENT", "EXACT_LIMIT",
           "RELATIVE_ERROR"]

REJECTED = (408, 413, 429, 503)  # HTTP statuses the gateway answers without a guest
_REFUSED_OUTCOMES = ("denied",)  # invocations stopped before the guest ran
# The file sink's lines are a batch of spans or one metrics request: a few MB at most.
# A longer line is skipped unparsed: JSON takes up to ~30 times its text in objects.
MAX_LINE_BYTES = 16 * 1024**2
READ_CHUNK = 1024**2
# Invocations listed at most (`recent`): each row is kept until the end, twice with
# warnings. A number past it raised OverflowError sizing the deque (found by review).
MAX_RECENT = 10_000


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
    ran (None without any), each within `percentile_error` of exact, relatively (0.0:
    exact; `RELATIVE_ERROR` past `EXACT_LIMIT` spans)."""

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
    percentile_error: float = 0.0
    recent: list[InvocationRow] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)  # "function 429" -> count
    warned: list[InvocationRow] = field(default_factory=list)  # latest with warnings


class BadLine(ValueError):
    """A line whose shape is not what the file sink writes: counted and skipped."""


def _dicts(parent: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
    """The objects of a repeated field: absent is empty (protobuf JSON), anything but a
    list of objects (null included: the writer never writes one) is bad."""
    items = parent.get(key, [])
    if not isinstance(items, list):
        raise BadLine(f"{key} is not a list")
    for item in items:
        yield _dict(item)


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadLine("not an object")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise BadLine("not a string")
    return value


_INT_DIGITS = 20  # int64 and uint64 fit: longer digit strings are not parsed at all


def _int(value: object, low: int, high: int) -> int:
    """A 64-bit integer, as JSON number or decimal string (protobuf JSON allows both)."""
    if isinstance(value, str) and len(value) <= _INT_DIGITS and value.isascii() and (
            value.removeprefix("-").isdigit()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadLine("not a 64-bit integer")
    return value


def _int64(value: object) -> int:
    return _int(value, -(2**63), 2**63 - 1)


def _uint64(value: object) -> int:
    return _int(value, 0, 2**64 - 1)


_NONFINITE = ("Infinity", "-Infinity", "NaN")  # how the writer spells them (strings)


def _double(value: object) -> float:
    if isinstance(value, str) and value in _NONFINITE:
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return float(value)
    if isinstance(value, float) and math.isfinite(value):  # a bare 1e400 parses as inf
        return value
    raise BadLine("not a double")


def _any_value(kind: str, raw: object) -> Any:
    if kind == "stringValue":
        return _str(raw)
    if kind == "intValue":
        return _int64(raw)
    if kind == "doubleValue":
        return _double(raw)
    if kind == "boolValue":
        if not isinstance(raw, bool):
            raise BadLine("not a bool")
        return raw
    return raw  # arrays, kvlists, bytes: never read here, kept as they are


def attributes_of(items: list[Any] | None) -> dict[str, Any]:
    """A plain dict from an OTLP/JSON `KeyValue` list (ints decoded from strings).
    Raises BadLine when it is not one."""
    return _attributes({"attributes": items} if items is not None else {})


def _attributes(parent: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in _dicts(parent, "attributes"):
        key = _str(item.get("key"))
        for kind, raw in _dict(item.get("value", {})).items():
            out[key] = _any_value(kind, raw)
    return out


def _text(attrs: dict[str, Any], key: str, default: str) -> str:
    """A string attribute: `default` when absent, bad when of another type."""
    return _str(attrs.get(key, default))


def _real(attrs: dict[str, Any], key: str) -> float:
    """A number attribute (int64 or double, both already in range): 0.0 when absent."""
    value = attrs.get(key, 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadLine(f"{key} is not a number")
    return float(value)


def _spans(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rs in _dicts(request, "resourceSpans"):
        for ss in _dicts(rs, "scopeSpans"):
            yield from _dicts(ss, "spans")


@dataclass(frozen=True)
class _Count:
    """A data point of a counter the summary adds up."""

    metric: str
    key: str  # outcome or violation kind ("" for warnings)
    value: int


_COUNTED = {"faas.invocations": "stockade.outcome",
            "stockade.violations": "stockade.violation.kind",
            "stockade.monitor.warnings": None}


def _counts(request: dict[str, Any]) -> Iterator[_Count]:
    for rm in _dicts(request, "resourceMetrics"):
        for sm in _dicts(rm, "scopeMetrics"):
            for metric in _dicts(sm, "metrics"):
                name = _str(metric.get("name"))
                data = _dict(metric["sum"] if "sum" in metric else metric.get("histogram", {}))
                for point in _dicts(data, "dataPoints"):
                    attrs = _attributes(point)
                    if name not in _COUNTED:
                        continue
                    attribute = _COUNTED[name]
                    key = _text(attrs, attribute, "?") if attribute else ""
                    # counters of deltas: never negative
                    yield _Count(name, key, _int(point.get("asInt", 0), 0, 2**63 - 1))


def _row(span: dict[str, Any]) -> InvocationRow | Rejection | None:
    """The span as an invocation, a rejection, or None (any other span)."""
    attrs = _attributes(span)
    start = _uint64(span.get("startTimeUnixNano"))
    end = _uint64(span.get("endTimeUnixNano"))
    if end < start:
        raise BadLine("span ends before it starts")
    name = _text(attrs, "faas.name", _str(span.get("name", "")))
    if "faas.invocation_id" not in attrs:
        status = attrs.get("http.response.status_code")
        if isinstance(status, int) and status in REJECTED:
            return Rejection(start, name, status)
        return None
    warnings = tuple(
        Warning_(_text(a, "stockade.warning.kind", "?"), _real(a, "stockade.warning.value"),
                 _real(a, "stockade.warning.limit"), _real(a, "stockade.warning.ratio"))
        for a in (_attributes(e) for e in _dicts(span, "events")
                  if e.get("name") == MONITOR_WARNING))
    return InvocationRow(
        start, name, _text(attrs, "stockade.outcome", "?"), (end - start) / 1e6,
        _text(attrs, "faas.invocation_id", ""), _text(attrs, "stockade.module.sha256", ""),
        _text(attrs, "stockade.limit.hit", "none"), len(warnings),
        _text(attrs, "stockade.tenant", ""), warnings)


@dataclass(frozen=True)
class _Line:
    rows: list[InvocationRow | Rejection]
    counts: list[_Count]


def _parse(line: bytes | None) -> _Line | None:
    """Everything the summary reads from one line, or None when any of it is not of the
    writer's shape: a line is counted whole or not at all."""
    if line is None:  # longer than MAX_LINE_BYTES
        return None
    try:
        request = _dict(json.loads(line))
        rows = [row for row in map(_row, _spans(request)) if row is not None]
        return _Line(rows, list(_counts(request)))
    except (ValueError, RecursionError, MemoryError):
        # ValueError: BadLine, JSON and UTF-8 errors, ints past Python's digit limit.
        # RecursionError: JSON nested deeper than the parser recurses. MemoryError: a
        # line of tiny containers; what it built is freed as the error unwinds.
        return None


def rows_of(line: bytes) -> list[InvocationRow | Rejection]:
    """The invocations and rejections in one line of the file (none for a bad line)."""
    parsed = _parse(line if len(line) <= MAX_LINE_BYTES else None)
    return parsed.rows if parsed is not None else []


class LineSplitter:
    """Cuts bytes read in pieces into lines of at most MAX_LINE_BYTES; a longer line comes
    out as None, and no more than MAX_LINE_BYTES of it is ever held."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._too_long = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """The lines `data` completes."""
        *complete, rest = data.split(b"\n")
        lines = [self._end(part) for part in complete]
        self._keep(rest)
        return lines

    def finish(self) -> list[bytes | None]:
        """The last line, when the data did not end with a newline."""
        if not self._pending and not self._too_long:
            return []
        return [self._end(b"")]

    def _keep(self, part: bytes) -> None:
        if self._too_long:
            return
        if len(self._pending) + len(part) > MAX_LINE_BYTES:
            self._too_long = True
            self._pending = bytearray()
        else:
            self._pending += part

    def _end(self, part: bytes) -> bytes | None:
        self._keep(part)
        line = None if self._too_long else bytes(self._pending)
        self._pending, self._too_long = bytearray(), False
        return line


def read_lines(file: BinaryIO) -> Iterator[bytes | None]:
    """The lines of `file` from where it is to its end (see LineSplitter)."""
    splitter = LineSplitter()
    while chunk := file.read(READ_CHUNK):
        yield from splitter.feed(chunk)
    yield from splitter.finish()


def open_file(path: Path | str) -> BinaryIO:
    """`path` opened for reading, when it is a regular file. Raises OSError (strerror
    says why) for anything else: a FIFO or device would block or never end."""
    return os.fdopen(open_regular(path, os.O_RDONLY, follow=True), "rb")


def read_summary(path: Path | str, recent: int = 10, filters: Filters | None = None
                 ) -> Summary:
    """Summarise the telemetry file at `path`, keeping the `recent` latest invocations
    (at most `MAX_RECENT`) that pass `filters`. Raises OSError when the file cannot be
    read, ValueError for a `recent` past `MAX_RECENT`."""
    with open_file(path) as file:
        return summarise(read_lines(file), Path(path), recent, filters or Filters())


def summarise(lines: Iterable[bytes | None], path: Path, recent: int, filters: Filters
              ) -> Summary:
    """`read_summary` over lines already read (see `read_lines`; None for one too long)."""
    if recent > MAX_RECENT:
        raise ValueError(f"recent: at most {MAX_RECENT} invocations are listed")
    summary = Summary(path)
    durations = Quantiles()  # one float a span grew without bound on a huge file
    latest: deque[InvocationRow] = deque(maxlen=max(recent, 1))
    warned: deque[InvocationRow] = deque(maxlen=max(recent, 1))
    span_outcomes: Counter[str] = Counter()
    span_warnings = 0
    for line in lines:
        summary.lines += 1
        parsed = _parse(line)
        if parsed is None:
            summary.bad_lines += 1
            continue
        for row in parsed.rows:
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
                durations.add(row.duration_ms)
            if filters.active and row.limit_hit not in ("none", ""):
                summary.violations[row.limit_hit] += 1
            latest.append(row)
            if row.warnings:
                warned.append(row)
        if filters.active:
            continue  # metrics cannot be filtered by tenant or time: spans count
        for count in parsed.counts:
            if count.metric == "faas.invocations":
                summary.outcomes[count.key] += count.value
                summary.invocations += count.value
            elif count.metric == "stockade.violations":
                summary.violations[count.key] += count.value
            else:
                summary.warnings += count.value
    if not summary.invocations:
        summary.outcomes = span_outcomes
        summary.invocations = summary.spans
        summary.warnings = max(summary.warnings, span_warnings)
    summary.p50_ms = durations.percentile(0.50)
    summary.p99_ms = durations.percentile(0.99)
    summary.percentile_error = durations.relative_error
    summary.recent = sorted(latest, key=lambda r: r.start_ns, reverse=True)[:recent]
    summary.warned = sorted(warned, key=lambda r: r.start_ns, reverse=True)
    return summary

"""One invocation as telemetry data: `InvocationRecord`, plus span events and log events.

`InvocationRecord.build` turns a `RunInfo` and its `Result` into plain fields that both
sinks (the local OTLP-JSON file and the OpenTelemetry SDK) write out, so the two agree
on names. The record keeps fields rather than an attribute dict: the file sink writes
them straight into JSON, which is what keeps telemetry cheap per invocation.
"""

from __future__ import annotations

import os
import time

from ..records import FieldTuple
from ..result import Outcome
from .instruments import Attributes, Measurement, attribute_set, bounded_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..observe import RunInfo
    from ..result import Result

__all__ = [
    "InvocationRecord",
    "run_name",
    "was_cold",
    "SpanData",
    "SpanEvent",
    "LogEvent",
    "ParentContext",
    "parse_traceparent",
    "LIMIT_HIT",
    "MONITOR_WARNING",
]

MONITOR_WARNING = "stockade.monitor.warning"

# outcome -> the limit that stopped the guest (`stockade.limit.hit`)
LIMIT_HIT: dict[Outcome, str] = {
    Outcome.TIMEOUT: "timeout",
    Outcome.FUEL_EXHAUSTED: "fuel",
    Outcome.MEMORY_LIMIT: "max_memory",
    Outcome.OUTPUT_LIMIT: "max_output",
    Outcome.DISK_QUOTA: "disk_quota",
    Outcome.FILE_QUOTA: "max_files",
    Outcome.FD_QUOTA: "max_open_files",
    Outcome.HOSTCALL_LIMIT: "max_hostcalls",
    Outcome.DENIED: "policy",
}


class ParentContext(FieldTuple):
    """The caller's span: trace id, span id, and whether the caller samples the trace."""

    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(value: str | bytes | None) -> ParentContext | None:
    """A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) as a `ParentContext`; None
    for a missing or malformed one (the W3C rule: start a new trace)."""
    if not value:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    parts = text.strip().lower().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return ParentContext(trace_id, span_id, bool(flags & 1))


class SpanData(FieldTuple):
    """A span other than an invocation's (the gateway's HTTP server span): ids given by
    its producer, `sampled` the caller's decision (None: decide by trace id), `links`
    the (trace id, span id) of spans it links to."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int
    sampled: bool | None
    start_ns: int
    end_ns: int
    attributes: Attributes
    error: str | None
    links: tuple[tuple[int, int], ...] = ()


class SpanEvent(FieldTuple):
    """A span event: name, time (ns since the epoch), attributes."""

    name: str
    time_ns: int
    attributes: Attributes


class LogEvent(FieldTuple):
    """A log record about a security event, tied to an invocation's span when known."""

    name: str
    body: str
    severity: str  # INFO, WARN, ERROR
    time_ns: int
    attributes: Attributes
    trace_id: int = 0
    span_id: int = 0


def run_name(info: RunInfo) -> str:
    """The name a run is recorded under: the invocation's, else the module file's."""
    return info.invocation.name or os.path.basename(info.module) or "module"


def was_cold(info: RunInfo, result: Result) -> bool:
    """Whether the run was its function's cold start (as the result or the caller says)."""
    return bool(result.coldstart or info.coldstart)


class InvocationRecord:
    """Span and metric data for one invocation. Times are ns since the epoch, `wall_s`
    the run's own wall time in seconds; `metric_name` is the bounded `name`. Sinks set
    `trace_id` and `span_id`."""

    # A plain class: a dataclass this size costs `stockade run` a third of a millisecond
    # just to define.
    __slots__ = (
        "name", "start_ns", "end_ns", "invocation_id", "coldstart", "max_memory", "sha256",
        "outcome", "exit_code", "guest_exit_code", "fuel_consumed", "peak_memory", "cpu_ms",
        "wall_s", "files_created", "bytes_written", "profile", "limit_hit", "tenant",
        "violation", "error", "metric_name", "warnings", "events", "trace_id", "span_id",
        "parent", "trigger",
    )

    def __init__(self, info: RunInfo, result: Result, end_ns: int | None = None) -> None:
        invocation = info.invocation
        outcome = result.outcome
        usage = result.usage
        end = end_ns if end_ns is not None else time.time_ns()
        start = int(info.started * 1e9)
        self.name: str = run_name(info)
        self.start_ns: int = start
        self.end_ns: int = max(end, start)
        self.invocation_id: str = invocation.invocation_id
        self.coldstart: bool = was_cold(info, result)
        self.max_memory: int = info.policy.limits.max_memory
        self.sha256: str = result.sha256 or info.sha256
        self.outcome: str = outcome.value
        self.exit_code: int = result.exit_code
        self.guest_exit_code: int | None = result.guest_exit_code
        self.fuel_consumed: int | None = usage.fuel_consumed  # None: not metered or not known
        self.peak_memory: int = usage.peak_memory_bytes
        self.cpu_ms: float = usage.cpu_ms
        self.wall_s: float = usage.wall_ms / 1000 if usage.wall_ms else (end - start) / 1e9
        self.files_created: int = usage.files_created
        self.bytes_written: int = usage.bytes_written
        self.profile: str = info.policy.profile
        self.limit_hit: str = LIMIT_HIT.get(outcome, "none")
        self.tenant: str | None = invocation.tenant
        # `faas.trigger` when the caller says what triggered the run (the gateway: http).
        self.trigger: str | None = getattr(invocation, "trigger", None)
        self.violation: bool = outcome.is_violation
        self.error: str | None = (result.message or outcome.value) if (
            self.violation or outcome is Outcome.ERROR) else None
        self.metric_name: str = bounded_name(self.name)
        self.events: list[SpanEvent] = []
        self.warnings: int = 0
        if info.events:
            self.events = [_event(n, a, end) for n, a in list(info.events)]
            self.warnings = sum(1 for e in self.events if e.name == MONITOR_WARNING)
        self.trace_id: int = 0
        self.span_id: int = 0
        # The caller's span: given as ids (the gateway's `parent`) or as a `traceparent`.
        self.parent: ParentContext | None = getattr(invocation, "parent", None) \
            or parse_traceparent(invocation.traceparent)

    @classmethod
    def build(cls, info: RunInfo, result: Result, end_ns: int | None = None) -> InvocationRecord:
        """The record of `result`, the run `info` described (`end_ns`: now)."""
        return cls(info, result, end_ns)

    @property
    def attributes(self) -> Attributes:
        """The span's attributes (the file sink writes the same ones itself)."""
        attrs: Attributes = {
            "faas.name": self.name,
            "faas.invocation_id": self.invocation_id,
            "faas.coldstart": self.coldstart,
            "faas.max_memory": self.max_memory,
            "stockade.module.sha256": self.sha256,
            "stockade.outcome": self.outcome,
            "stockade.exit_code": self.exit_code,
            "stockade.memory.peak": self.peak_memory,
            "stockade.cpu.time_ms": self.cpu_ms,
            "stockade.files.created": self.files_created,
            "stockade.bytes.written": self.bytes_written,
            "stockade.policy.profile": self.profile,
            "stockade.limit.hit": self.limit_hit,
        }
        if self.fuel_consumed is not None:
            attrs["stockade.fuel.consumed"] = self.fuel_consumed
        if self.guest_exit_code is not None:
            attrs["stockade.guest.exit_code"] = self.guest_exit_code
        if self.tenant:
            attrs["stockade.tenant"] = self.tenant
        if self.trigger:
            attrs["faas.trigger"] = self.trigger
        return attrs

    def measurements(self) -> list[Measurement]:
        """(instrument, value, attributes) for every metric this invocation adds to."""
        base = attribute_set(("faas.name", self.metric_name), ("stockade.outcome", self.outcome))
        out: list[Measurement] = [
            ("faas.invoke_duration", self.wall_s, base),
            ("faas.cpu_usage", self.cpu_ms / 1000, base),
            ("faas.mem_usage", float(self.peak_memory), base),
            ("faas.invocations", 1.0, base),
            ("stockade.fuel.consumed", float(self.fuel_consumed or 0), base),
            ("stockade.files.created", float(self.files_created), base),
            ("stockade.bytes.written", float(self.bytes_written), base),
        ]
        if self.coldstart:
            out.append(("faas.coldstarts", 1.0, base))
        if self.warnings:
            out.append(("stockade.monitor.warnings", float(self.warnings), base))
        if self.violation:
            kind = attribute_set(("faas.name", self.metric_name),
                                 ("stockade.violation.kind", self.outcome))
            out.append(("stockade.violations", 1.0, kind))
        return out


def _event(name: str, data: dict[str, object], end: int) -> SpanEvent:
    attrs: Attributes = {}
    stamp = end
    for key, value in data.items():
        if key == "time_unix_nano" and isinstance(value, int):
            stamp = value
        elif key != "time_unix_nano":
            attrs[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return SpanEvent(name, stamp, attrs)

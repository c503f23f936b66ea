"""Where invocation records go: the `Sink` interface, the null sink, and what every sink
shares (resource attributes, instrumentation scope, trace-id ratio sampling)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .record import InvocationRecord, LogEvent, SpanData
    from .settings import ExportSettings
else:
    Protocol = object  # `typing` costs `stockade run` ~2 ms; at run time a plain base

__all__ = ["Sink", "NullSink", "resource_attributes", "scope", "ratio_bound", "is_sampled"]

_TRACE_ID_MASK = (1 << 64) - 1


class Sink(Protocol):
    """Receives finished invocations and security log events. Implementations are
    thread-safe and never raise from `record` or `log` (failures are logged)."""

    def record(self, record: InvocationRecord) -> None:
        """Export one invocation: a span (if sampled) and its measurements. Sets
        `record.trace_id` and `record.span_id`."""

    def span(self, span: SpanData) -> None:
        """Export one span whose ids its producer chose (the gateway's server span)."""

    def log(self, event: LogEvent) -> None:
        """Export one log record."""

    def flush(self) -> None:
        """Write out what is buffered."""

    def close(self) -> None:
        """Flush and release resources; safe to call twice."""


class NullSink:
    """Drops everything (telemetry off)."""

    def record(self, record: InvocationRecord) -> None:
        """Drop `record`."""

    def span(self, span: SpanData) -> None:
        """Drop `span`."""

    def log(self, event: LogEvent) -> None:
        """Drop `event`."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


def _version() -> str:
    # The package is always imported before this module; `importlib.metadata` would cost
    # `stockade run` 12 ms.
    return str(getattr(sys.modules.get("stockade"), "__version__", "0+unknown"))


def scope() -> dict[str, str]:
    """The instrumentation scope of every record Stockade emits."""
    return {"name": "stockade", "version": _version()}


def resource_attributes(settings: ExportSettings) -> dict[str, str | int]:
    """Resource attributes: the detected environment, the service (its replica as
    `service.instance.id`), the SDK, then the `OTEL_RESOURCE_ATTRIBUTES` entries, which
    win."""
    from ..replica import replica_id
    from .environment import cached_environment

    attrs: dict[str, str | int] = {
        "service.name": settings.service_name,
        "service.instance.id": replica_id(),
        "service.version": _version(),
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "stockade" if not settings.exports else "opentelemetry",
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        "stockade.telemetry.profile": settings.profile.name,
    }
    attrs.update(cached_environment().resource_attributes())
    attrs.update(settings.resource_attributes)
    return attrs


def ratio_bound(ratio: float) -> int:
    """The TraceIdRatioBased bound: a trace is kept when its low 64 bits are below it."""
    return round(ratio * (_TRACE_ID_MASK + 1))


def is_sampled(trace_id: int, bound: int) -> bool:
    """The OTel SDK's `TraceIdRatioBased` decision for `trace_id`."""
    return trace_id & _TRACE_ID_MASK < bound

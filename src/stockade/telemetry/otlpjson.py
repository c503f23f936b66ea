"""A small OTLP/JSON encoder: export requests as JSON text, without the SDK or protobuf.

Follows the OTLP/JSON encoding of the protobuf messages: lowerCamelCase keys, trace
and span ids as hex strings, 64-bit integers as decimal strings, enums as integers.
Spans are written straight to text from a template (no intermediate dicts): this runs
once per invocation, and building dicts for `json.dumps` tripled its cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring

from .record import InvocationRecord, LogEvent, SpanData

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "any_value",
    "key_values",
    "attributes_json",
    "resource_json",
    "scope_json",
    "span_json",
    "generic_span_json",
    "encode_spans",
    "encode_logs",
    "encode_metrics",
    "SPAN_KIND_SERVER",
    "STATUS_ERROR",
    "SEVERITY",
]

SPAN_KIND_SERVER = 2
STATUS_ERROR = 2
SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}
_NONFINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}  # protobuf JSON spelling
# C-accelerated JSON string escaping, quotes included
_quote: Callable[[str], str] = encode_basestring


def any_value(value: object) -> dict[str, Any]:
    """An OTLP `AnyValue` for a Python value (bool, int, float, str, bytes, list, dict)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _NONFINITE[str(value)]}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": str(value)}


def key_values(attrs: Mapping[str, object]) -> list[dict[str, Any]]:
    """OTLP `KeyValue` list for an attribute mapping."""
    return [{"key": key, "value": any_value(value)} for key, value in attrs.items()]


def _value_json(value: object) -> str:
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        return '{"intValue":"' + str(value) + '"}'
    if isinstance(value, float):
        return '{"doubleValue":' + _double(value) + "}"
    if isinstance(value, str):
        return '{"stringValue":' + _quote(value) + "}"
    return json.dumps(any_value(value), separators=(",", ":"))


def attributes_json(attrs: Mapping[str, object]) -> str:
    """A JSON `KeyValue` array for an attribute mapping."""
    return "[" + ",".join('{"key":' + _quote(key) + ',"value":' + _value_json(value) + "}"
                          for key, value in attrs.items()) + "]"


def resource_json(attrs: Mapping[str, object]) -> str:
    """A JSON `Resource`."""
    return '{"attributes":' + attributes_json(attrs) + "}"


def scope_json(scope: Mapping[str, str]) -> str:
    """A JSON `InstrumentationScope`."""
    return json.dumps(dict(scope), separators=(",", ":"))


def _double(value: float) -> str:
    return repr(value) if math.isfinite(value) else '"' + _NONFINITE[str(value)] + '"'


# The attributes of `InvocationRecord.attributes`, in its order, as one template: one
# `%` operation instead of a dict and a function call per attribute.
_SPAN = ('{"traceId":"%032x","spanId":"%016x","name":%s,"kind":2,'
         '"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":['
         '{"key":"faas.name","value":{"stringValue":%s}},'
         '{"key":"faas.invocation_id","value":{"stringValue":%s}},'
         '{"key":"faas.coldstart","value":{"boolValue":%s}},'
         '{"key":"faas.max_memory","value":{"intValue":"%d"}},'
         '{"key":"stockade.module.sha256","value":{"stringValue":%s}},'
         '{"key":"stockade.outcome","value":{"stringValue":%s}},'
         '{"key":"stockade.exit_code","value":{"intValue":"%d"}},%s'
         '{"key":"stockade.memory.peak","value":{"intValue":"%d"}},'
         '{"key":"stockade.cpu.time_ms","value":{"doubleValue":%s}},'
         '{"key":"stockade.files.created","value":{"intValue":"%d"}},'
         '{"key":"stockade.bytes.written","value":{"intValue":"%d"}},'
         '{"key":"stockade.policy.profile","value":{"stringValue":%s}},'
         '{"key":"stockade.limit.hit","value":{"stringValue":%s}}')


def span_json(record: InvocationRecord) -> str:
    """One span as JSON text (a server span with its attributes, events and status)."""
    name = _quote(record.name)
    text = _SPAN % (
        record.trace_id, record.span_id, name, record.start_ns, record.end_ns, name,
        _quote(record.invocation_id), "true" if record.coldstart else "false",
        record.max_memory, _quote(record.sha256), _quote(record.outcome), record.exit_code,
        "" if record.fuel_consumed is None else
        '{"key":"stockade.fuel.consumed","value":{"intValue":"' + str(record.fuel_consumed)
        + '"}},',
        record.peak_memory, _double(record.cpu_ms),
        record.files_created, record.bytes_written, _quote(record.profile),
        _quote(record.limit_hit),
    )
    if record.guest_exit_code is not None:
        text += (',{"key":"stockade.guest.exit_code","value":{"intValue":"'
                 + str(record.guest_exit_code) + '"}}')
    if record.tenant:
        text += ',{"key":"stockade.tenant","value":{"stringValue":' + _quote(record.tenant) + "}}"
    if record.trigger:
        text += ',{"key":"faas.trigger","value":{"stringValue":' + _quote(record.trigger) + "}}"
    text += "]"
    if record.parent is not None:
        text += ',"parentSpanId":"' + format(record.parent.span_id, "016x") + '"'
    if record.events:
        text += ',"events":[' + ",".join(
            '{"timeUnixNano":"' + str(e.time_ns) + '","name":' + _quote(e.name)
            + ',"attributes":' + attributes_json(e.attributes) + "}"
            for e in record.events) + "]"
    if record.error:
        return text + ',"status":{"code":2,"message":' + _quote(record.error) + "}}"
    return text + ',"status":{}}'


def generic_span_json(span: SpanData) -> str:
    """A server span given as `SpanData` (the gateway's HTTP span) as JSON text."""
    text = ('{"traceId":"' + format(span.trace_id, "032x") + '","spanId":"'
            + format(span.span_id, "016x") + '"')
    if span.parent_id:
        text += ',"parentSpanId":"' + format(span.parent_id, "016x") + '"'
    text += (',"name":' + _quote(span.name) + ',"kind":2,"startTimeUnixNano":"'
             + str(span.start_ns) + '","endTimeUnixNano":"' + str(span.end_ns)
             + '","attributes":' + attributes_json(span.attributes))
    if span.links:
        text += ',"links":[' + ",".join(
            '{"traceId":"' + format(trace_id, "032x") + '","spanId":"'
            + format(span_id, "016x") + '"}' for trace_id, span_id in span.links) + "]"
    if span.error:
        return text + ',"status":{"code":2,"message":' + _quote(span.error) + "}}"
    return text + ',"status":{}}'


def encode_spans(resource: str, scope: str, spans: Iterable[str]) -> str:
    """An `ExportTraceServiceRequest` (JSON text) with one resource and scope and the spans
    (all three already JSON: see `resource_json`, `scope_json`, `span_json`)."""
    return ('{"resourceSpans":[{"resource":' + resource + ',"scopeSpans":[{"scope":' + scope
            + ',"spans":[' + ",".join(spans) + "]}]}]}")


def _log(event: LogEvent) -> str:
    stamp = str(event.time_ns)
    text = ('{"timeUnixNano":"' + stamp + '","observedTimeUnixNano":"' + stamp
            + '","severityNumber":' + str(SEVERITY.get(event.severity, 9))
            + ',"severityText":' + _quote(event.severity)
            + ',"body":{"stringValue":' + _quote(event.body)
            + '},"attributes":' + attributes_json(event.attributes)
            + ',"eventName":' + _quote(event.name))
    if event.trace_id:
        text += (',"traceId":"' + format(event.trace_id, "032x")
                 + '","spanId":"' + format(event.span_id, "016x") + '"')
    return text + "}"


def encode_logs(resource: str, scope: str, events: Iterable[LogEvent]) -> str:
    """An `ExportLogsServiceRequest` (JSON text) with one resource and scope."""
    return ('{"resourceLogs":[{"resource":' + resource + ',"scopeLogs":[{"scope":' + scope
            + ',"logRecords":[' + ",".join(_log(e) for e in events) + "]}]}]}")


def encode_metrics(resource: str, scope: str, metrics: Sequence[dict[str, Any]]) -> str:
    """An `ExportMetricsServiceRequest` (JSON text) wrapping `Metric` objects."""
    return ('{"resourceMetrics":[{"resource":' + resource + ',"scopeMetrics":[{"scope":'
            + scope + ',"metrics":' + json.dumps(list(metrics), separators=(",", ":"))
            + "}]}]}")

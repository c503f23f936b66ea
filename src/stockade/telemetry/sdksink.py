"""Export through the OpenTelemetry SDK to an OTLP endpoint (gRPC or HTTP/protobuf).

Built only when an endpoint is configured; every SDK import happens in here, inside
functions, so `stockade run` without an endpoint never pays for it. The providers are
private to this sink (never installed as globals): an embedding application keeps
its own. Export errors are logged by the SDK and never raised.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..display import printable
from .instruments import INSTRUMENTS
from .log import logger
from .settings import shown_endpoint
from .sink import resource_attributes, scope

if TYPE_CHECKING:
    from .record import InvocationRecord, LogEvent, SpanData
    from .settings import ExportSettings

__all__ = ["SdkSink", "CLOSE_GRACE", "export_logger"]

MAX_REPLY_BYTES = 64 * 1024  # of a collector's reply kept; a real one is a few bytes


def _exporter(settings: ExportSettings, signal: str) -> Any:
    """The OTLP exporter for `signal` over the settings' protocol and compression."""
    endpoint = settings.endpoints[signal]
    headers = dict(settings.headers) or None
    gzip = settings.compression == "gzip"
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import (
            _log_exporter as grpc_logs,
        )
        from opentelemetry.exporter.otlp.proto.grpc import (
            metric_exporter as grpc_metrics,
        )
        from opentelemetry.exporter.otlp.proto.grpc import (
            trace_exporter as grpc_traces,
        )

        grpc_classes = {
            "traces": grpc_traces.OTLPSpanExporter,
            "metrics": grpc_metrics.OTLPMetricExporter,
            "logs": grpc_logs.OTLPLogExporter,
        }
        grpc: Any = importlib.import_module("grpc")  # no type stubs installed
        compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
        # gRPC's own default is 4 MiB a reply; its deadline is a whole call's already.
        options = (("grpc.max_receive_message_length", MAX_REPLY_BYTES),)
        return grpc_classes[signal](endpoint=endpoint, headers=headers, compression=compression,
                                    timeout=settings.timeout, channel_options=options)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
    from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces

    from .otlphttp import BoundedSession

    http_classes = {
        "traces": http_traces.OTLPSpanExporter,
        "metrics": http_metrics.OTLPMetricExporter,
        "logs": http_logs.OTLPLogExporter,
    }
    return http_classes[signal](
        endpoint=endpoint,
        headers=headers,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
        timeout=settings.timeout,
        # The SDK's session read a reply whole, followed no redirect but counted a 3xx as
        # success, and timed each read only (a trickling collector held it for good).
        session=BoundedSession(settings.timeout, MAX_REPLY_BYTES),
    )


def _reporting(exporter: Any, endpoint: str, report: _FailureReport,
               lines: _ExporterLines) -> Any:
    """`exporter` (sending to `endpoint`), its `export` telling `report` of each failed
    export with its cause. Per export on the exporter's thread: nothing is added where
    spans are recorded."""
    export = exporter.export
    endpoint = shown_endpoint(endpoint)  # as the report says it

    def reporting_export(*args: Any, **kwargs: Any) -> Any:
        lines.forget_cause()
        try:
            result = export(*args, **kwargs)
        except Exception as error:
            report.failed(endpoint, lines.cause() or _cause(str(error)))
            raise
        # SpanExportResult, MetricExportResult, LogRecordExportResult: SUCCESS or FAILURE.
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            report.failed(endpoint, lines.cause())
        return result

    exporter.export = reporting_export
    return exporter


class _Preset(threading.local):
    """Ids the next span started on this thread must carry (the gateway chose them)."""

    trace_id = 0
    span_id = 0


def _id_generator(preset: _Preset) -> Any:
    """The SDK's random ids, unless `preset` holds ids for the span being started."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PresetIdGenerator(RandomIdGenerator):
        def generate_span_id(self) -> int:
            return preset.span_id or super().generate_span_id()

        def generate_trace_id(self) -> int:
            return preset.trace_id or super().generate_trace_id()

    return PresetIdGenerator()


def _parent(trace_id: int, span_id: int, sampled: bool) -> Any:
    """A context whose current span is the remote caller's."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return set_span_in_context(NonRecordingSpan(
        SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)))


class SdkSink:
    """Tracer, meter and logger providers with batch processors and OTLP exporters,
    sized by the export profile (batch, interval) and sampled parent-based by trace id."""

    def __init__(self, settings: ExportSettings) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

        self._settings = settings
        self._exporter_lines = _ExporterLines.install()
        self._report = _FailureReport(tuple(settings.endpoints.values()))
        resource = Resource(resource_attributes(settings))
        delay_ms = settings.interval * 1000
        sampler: Sampler = TraceIdRatioBased(settings.sampling_ratio)
        if settings.parent_based:
            sampler = ParentBased(sampler)
        self._preset = _Preset()
        # No atexit shutdown: `close` bounds it (an unbounded one held a run at exit).
        self._tracer_provider = TracerProvider(resource=resource, sampler=sampler,
                                               id_generator=_id_generator(self._preset),
                                               shutdown_on_exit=False)
        if "traces" in settings.endpoints:
            self._tracer_provider.add_span_processor(BatchSpanProcessor(
                self._reported(settings, "traces"),
                max_queue_size=max(2048, settings.batch_size * 4),
                schedule_delay_millis=delay_ms,
                max_export_batch_size=settings.batch_size,
            ))
        readers = []
        if "metrics" in settings.endpoints:
            readers.append(PeriodicExportingMetricReader(
                self._reported(settings, "metrics"), export_interval_millis=delay_ms,
            ))
        self._meter_provider = MeterProvider(resource=resource, metric_readers=readers,
                                             shutdown_on_exit=False)
        self._logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        if "logs" in settings.endpoints:
            self._logger_provider.add_log_record_processor(BatchLogRecordProcessor(
                self._reported(settings, "logs"),
                schedule_delay_millis=delay_ms,
                max_export_batch_size=settings.batch_size,
            ))
        info = scope()
        self._tracer = self._tracer_provider.get_tracer(info["name"], info["version"])
        meter = self._meter_provider.get_meter(info["name"], info["version"])
        self._logger = self._logger_provider.get_logger(info["name"], info["version"])
        self._histograms: dict[str, Any] = {}
        # Counters are summed here and observed at export time: one SDK `add` per counter
        # per invocation cost more than the invocation itself.
        self._totals: dict[tuple[str, tuple[tuple[str, Any], ...]], list[Any]] = {}
        self._totals_lock = threading.Lock()
        for name, spec in INSTRUMENTS.items():
            if spec.kind == "histogram":
                self._histograms[name] = meter.create_histogram(
                    name, spec.unit, spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.bounds),
                )
            else:
                meter.create_observable_counter(
                    name, [functools.partial(self._observe, name)], spec.unit, spec.description)
        self._closed = False

    def _reported(self, settings: ExportSettings, signal: str) -> Any:
        """The exporter of `signal`, its failures reported under its own endpoint."""
        return _reporting(_exporter(settings, signal), settings.endpoints[signal],
                          self._report, self._exporter_lines)

    def _observe(self, name: str, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        with self._totals_lock:
            return [Observation(total, attrs.attrs)
                    for (metric, _), (attrs, total) in self._totals.items() if metric == name]

    def record(self, record: InvocationRecord) -> None:
        """Start and end the invocation's span (timestamps from the record) and record its
        measurements."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        try:
            parent = record.parent
            span = self._tracer.start_span(
                record.name, kind=SpanKind.SERVER, attributes=record.attributes,
                start_time=record.start_ns,
                context=_parent(*parent) if parent is not None else None,
            )
            for event in record.events:
                span.add_event(event.name, event.attributes, timestamp=event.time_ns)
            if record.error:
                span.set_status(Status(StatusCode.ERROR, record.error))
            context = span.get_span_context()
            record.trace_id, record.span_id = context.trace_id, context.span_id
            span.end(end_time=record.end_ns)
            counted = []
            for name, value, attribute_set in record.measurements():
                histogram = self._histograms.get(name)
                if histogram is not None:
                    histogram.record(value, attribute_set.attrs)
                else:
                    counted.append((name, int(value), attribute_set))
            with self._totals_lock:
                for name, value, attribute_set in counted:
                    entry = self._totals.get((name, attribute_set.key))
                    if entry is None:
                        self._totals[(name, attribute_set.key)] = [attribute_set, value]
                    else:
                        entry[1] += value
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning("could not record invocation telemetry", exc_info=True)

    def span(self, span: SpanData) -> None:
        """Export a span with the ids its producer chose: the SDK's id generator is told
        them for the duration of `start_span`."""
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

        try:
            context = None
            if span.parent_id:
                context = _parent(span.trace_id, span.parent_id, bool(span.sampled))
            links = [Link(SpanContext(trace_id, span_id, is_remote=True))
                     for trace_id, span_id in span.links]
            self._preset.trace_id, self._preset.span_id = span.trace_id, span.span_id
            try:
                started = self._tracer.start_span(
                    span.name, kind=SpanKind.SERVER, attributes=span.attributes,
                    start_time=span.start_ns, context=context, links=links)
            finally:
                self._preset.trace_id = self._preset.span_id = 0
            if span.error:
                started.set_status(Status(StatusCode.ERROR, span.error))
            started.end(end_time=span.end_ns)
        except Exception:  # noqa: BLE001 - telemetry never breaks a request
            logger().warning("could not record a server span", exc_info=True)

    def log(self, event: LogEvent) -> None:
        """Emit a log record, in the context of its invocation's span when known."""
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            TraceFlags,
            set_span_in_context,
        )

        try:
            context = None
            if event.trace_id:
                span_context = SpanContext(
                    event.trace_id, event.span_id, is_remote=False,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
                context = set_span_in_context(NonRecordingSpan(span_context))
            self._logger.emit(
                timestamp=event.time_ns,
                context=context,
                severity_number=SeverityNumber[event.severity],
                severity_text=event.severity,
                body=event.body,
                attributes=event.attributes,
                event_name=event.name,
            )
        except Exception:  # noqa: BLE001
            logger().warning("could not emit telemetry log record", exc_info=True)

    def _providers(self) -> tuple[Any, ...]:
        return self._tracer_provider, self._meter_provider, self._logger_provider

    def flush(self) -> None:
        """Export everything pending now, waiting at most the export timeout."""
        millis = max(1, int(self._settings.timeout * 1000))
        for provider in self._providers():
            try:
                provider.force_flush(millis)
            except Exception:  # noqa: BLE001
                logger().warning("telemetry flush failed", exc_info=True)

    def close(self) -> None:
        """Flush and shut the providers down, all three at once and for at most the export
        timeout (plus `CLOSE_GRACE`): a collector that does not answer costs a run that
        long and one warning line (`stockade.otlp`), whatever was dropped. Failures while
        running were said as they happened (`_FailureReport`). Safe twice."""
        if self._closed:
            return
        self._closed = True
        earlier = self._report.closing()
        threads = [threading.Thread(target=_shutdown, args=(provider,), daemon=True,
                                    name="stockade-otlp-shutdown")
                   for provider in self._providers()]
        started = time.monotonic()
        deadline = started + self._settings.timeout + CLOSE_GRACE
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = sum(thread.is_alive() for thread in threads)
        at_close, last = self._report.take_closing()
        self._exporter_lines.uninstall()
        if at_close or unfinished:
            cause = f": {last}" if last else ""
            # A gateway closes after weeks: what is dropped now is what was pending.
            before = f"; {earlier} exports had failed earlier, while running" if earlier else ""
            # Waiting longer can help only an export that took all its time; a collector
            # that answered with an error was told to wait longer.
            spent = unfinished or time.monotonic() - started >= self._settings.timeout
            within = f" within {self._settings.timeout:.1f} s" if spent else ""
            advice = "set OTEL_EXPORTER_OTLP_TIMEOUT in ms to wait longer; " if spent else ""
            export_logger().warning(
                "telemetry: could not export to %s%s%s (%sthe telemetry pending at exit is "
                "dropped%s)", self._report.where(), within, cause, advice, before)
        else:
            self._report.say_unsaid()


CLOSE_GRACE = 0.25  # seconds on top of the export timeout for the shutdown itself


def export_logger() -> logging.Logger:
    """Where export failures go: outside ``stockade.telemetry`` (whose NullHandler keeps
    library chatter quiet), so with no logging configured the line reaches stderr."""
    return logging.getLogger("stockade.otlp")


def _shutdown(provider: Any) -> None:
    try:
        provider.shutdown()
    except Exception:  # noqa: BLE001 - telemetry never breaks a run
        logger().warning("telemetry shutdown failed", exc_info=True)


REPORT_INTERVAL = 60.0  # seconds between a sink's lines about failed exports while running


class _FailureReport:
    """One sink's failed exports, said on `export_logger` while the process runs: at once
    for the first, then at most once per `REPORT_INTERVAL` with the count since the last
    line, the endpoints that failed and the last cause (a gateway said nothing until it
    exited). Once closing, they are left to the close's own line. Called per failed
    export only. `endpoints`: the sink's, one per signal (said without the credentials
    a URL may carry)."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self._endpoints = tuple(dict.fromkeys(map(shown_endpoint, endpoints))) or ("?",)
        self._failing: dict[str, None] = {}  # since the last line (or since closing)
        self._lock = threading.Lock()
        self._unsaid = 0  # failed since the last line
        self._before_close = 0
        self._at_close = 0
        self._closing = False
        self._cause = ""
        self._said_at: float | None = None

    def failed(self, endpoint: str, cause: str) -> None:
        """An export to `endpoint` (as shown: `shown_endpoint`) failed with `cause`."""
        with self._lock:
            if cause and (specific(cause) or not specific(self._cause)):
                self._cause = cause  # a named cause is kept over "failed to export"
            self._failing[endpoint] = None
            if self._closing:
                self._at_close += 1
                return
            self._before_close += 1
            self._unsaid += 1
            now = time.monotonic()
            if self._said_at is not None and now - self._said_at < REPORT_INTERVAL:
                return
            line = self._line(now)
        export_logger().warning(*line)

    def _line(self, now: float) -> tuple[Any, ...]:
        since = ("start" if self._said_at is None
                 else f"the last such line {now - self._said_at:.0f} s ago")
        count, self._unsaid, self._said_at = self._unsaid, 0, now
        where = ", ".join(self._failing)
        self._failing = {}
        return ("telemetry: exports to %s are failing: %d failed since %s, the last with "
                "%s (their telemetry is dropped; said at most every %.0f s)",
                where, count, since, self._cause or "no cause given", REPORT_INTERVAL)

    def where(self) -> str:
        """The endpoints that failed since closing, else all the sink's (an export cut
        short at the close's deadline reported nothing)."""
        with self._lock:
            return ", ".join(self._failing or self._endpoints)

    def closing(self) -> int:
        """From now on failures belong to the close; how many failed before."""
        with self._lock:
            self._closing = True
            self._cause = ""
            self._failing = {}
            return self._before_close

    def take_closing(self) -> tuple[int, str]:
        """(failures since `closing`, the last cause)."""
        with self._lock:
            return self._at_close, self._cause

    def say_unsaid(self) -> None:
        """Say the failures the interval held back, if any."""
        with self._lock:
            line = self._line(time.monotonic()) if self._unsaid else None
        if line is not None:
            export_logger().warning(*line)


class _ExporterLines(logging.Handler):
    """Takes the OTLP exporters' own log lines (a warning per retry, an error per
    dropped batch) off the console and keeps, per thread, the cause they name, for the
    export that thread is running (`_reporting`). One instance per process, shared by
    the sinks (the exporters' loggers are global)."""

    _installed: _ExporterLines | None = None
    _users = 0
    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._causes = threading.local()

    @classmethod
    def install(cls) -> _ExporterLines:
        """The shared handler, attached to the exporters' loggers."""
        with cls._lock:
            if cls._installed is None:
                cls._installed = cls()
                for name in _EXPORTER_LOGGERS:
                    log = logging.getLogger(name)
                    log.addHandler(cls._installed)
                    log.propagate = False
            cls._users += 1
            return cls._installed

    def uninstall(self) -> None:
        """Detach once the last sink using it has closed."""
        with self._lock:
            type(self)._users -= 1
            if type(self)._users > 0 or type(self)._installed is not self:
                return
            type(self)._installed = None
            for name in _EXPORTER_LOGGERS:
                log = logging.getLogger(name)
                log.removeHandler(self)
                log.propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        """Remember the cause (a retry's names it better than the final error's)."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record still names a failure
            message = str(record.msg)
        if "Transient error" in message or not specific(self.cause()):
            self._causes.last = _cause(message)

    def forget_cause(self) -> None:
        """A new export starts on this thread."""
        self._causes.last = ""

    def cause(self) -> str:
        """The cause this thread's exporter last named."""
        return str(getattr(self._causes, "last", ""))


# The SDK's processors log an exporter's exception with its traceback, which holds the
# collector's words unescaped (a gRPC status detail of escape codes, found by review).
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal",
                     "opentelemetry.sdk.metrics._internal.export",
                     "opentelemetry.sdk.trace.export", "opentelemetry.sdk._logs._internal.export")


_MARKERS = ("[Errno", "StatusCode.", "status code", "export deadline")


def specific(cause: str) -> bool:
    """Whether `cause` names what failed (a refused connection, a status), not only that
    an export did: which of the exporters' threads said it last was chance."""
    return any(marker in cause for marker in _MARKERS)


def _cause(message: str) -> str:
    """The useful end of an exporter message: 'Connection refused' rather than a page,
    its control characters escaped (a collector's reason phrase moved the cursor and
    rewrote the lines above it)."""
    for marker in _MARKERS:
        at = message.find(marker)
        if at >= 0:
            cause = message[at:at + 120]
            for end in (" encountered", ")", "'", '"', ","):
                cause = cause.split(end)[0]
            return printable(cause.strip())
    return printable(message[:120])

"""The embedded default: OTLP export requests as JSON lines in a local file.

No OpenTelemetry SDK or protobuf is imported (start-up time of `stockade run`).
Spans and logs are buffered up to the profile's batch size, metrics aggregated as
deltas and written on the profile's interval (and at `flush`); a write appends up to
three lines (traces, metrics, logs) under an exclusive `flock`, so processes can share
the file. Past `max_bytes` the file is rotated to
`<name>.1`. Write failures are said on stderr (at most once a minute), never raised;
the file must be a regular file (`regularfile.open_regular`).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from ..regularfile import append_whole, open_regular
from .aggregate import DeltaAggregator
from .instruments import bounded_name
from .log import logger, records_lost
from .otlpjson import (
    encode_logs,
    encode_metrics,
    encode_spans,
    generic_span_json,
    resource_json,
    scope_json,
    span_json,
)
from .record import run_name, was_cold
from .sink import is_sampled, ratio_bound, resource_attributes, scope

if TYPE_CHECKING:
    from ..observe import RunInfo
    from ..result import Result
    from .record import InvocationRecord, LogEvent, SpanData
    from .settings import ExportSettings

__all__ = ["FileSink", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 64 * 1024**2
_ENTROPY_BLOCK = 24 * 64
_SINKS: weakref.WeakSet[FileSink] = weakref.WeakSet()


def _forget_entropy_after_fork() -> None:
    # A forked child must not hand out the ids its parent will also use.
    for sink in list(_SINKS):
        sink._entropy, sink._entropy_at = b"", 0


os.register_at_fork(after_in_child=_forget_entropy_after_fork)


class FileSink:
    """Appends OTLP/JSON requests to `settings.file`, sampling spans at the settings'
    ratio (metrics and logs are never sampled)."""

    def __init__(self, settings: ExportSettings, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = settings.file
        self._settings = settings
        self._bound = ratio_bound(settings.sampling_ratio)
        self._batch = max(1, settings.batch_size)
        self._interval = settings.interval
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._spans: list[str] = []  # encoded at once: no live objects for the GC to walk
        self._logs: list[LogEvent] = []
        self._metrics = DeltaAggregator()
        self._last_flush = time.monotonic()
        self._resource: str | None = None
        self._entropy = b""
        self._entropy_at = 0
        _SINKS.add(self)

    def record(self, record: InvocationRecord) -> None:
        """Assign ids, keep the span if sampled, aggregate its measurements."""
        parent = record.parent
        ids = self._random_ids()
        record.trace_id = parent.trace_id if parent else int.from_bytes(ids[:16]) or 1
        record.span_id = int.from_bytes(ids[16:]) or 1
        self._metrics.add(record)
        keep = self._keep(record.trace_id, parent.sampled if parent else None)
        self._add_span(span_json(record) if keep else None)

    def record_unsampled(self, info: RunInfo, result: Result) -> bool:
        """Aggregate a clean run whose span is not kept (its parent's trace is not
        sampled) without building its record: most of a gateway's invocations. False,
        with nothing done, when the span would be kept or there is no parent."""
        parent = getattr(info.invocation, "parent", None)
        if parent is None or self._keep(parent.trace_id, parent.sampled):
            return False
        # `_value_`, not `value`: an enum's `value` is a Python-level descriptor.
        self._metrics.add_usage(bounded_name(run_name(info)), result.outcome._value_,
                                result.usage, was_cold(info, result))
        if self.due():
            self.flush()
        return True

    def _random_ids(self) -> bytes:
        """24 random bytes (a trace id and a span id). os.urandom, not `random`, whose
        import costs `stockade run` 1.7 ms; read in blocks, not one system call per run."""
        with self._lock:
            start = self._entropy_at
            if start + 24 > len(self._entropy):
                self._entropy, start = os.urandom(_ENTROPY_BLOCK), 0
            self._entropy_at = start + 24
            return self._entropy[start:start + 24]

    def span(self, span: SpanData) -> None:
        """Keep `span` if sampled (parent-based, like the invocation spans)."""
        keep = self._keep(span.trace_id, span.sampled)
        self._add_span(generic_span_json(span) if keep else None)

    def _keep(self, trace_id: int, parent_sampled: bool | None) -> bool:
        if parent_sampled is not None and self._settings.parent_based:
            return parent_sampled
        return is_sampled(trace_id, self._bound)

    def _add_span(self, text: str | None) -> None:
        if text is None:  # an unsampled span: only the flush interval to look at
            if self.due():
                self.flush()
            return
        with self._lock:
            self._spans.append(text)
            full = len(self._spans) >= self._batch
        self._flush_if(full)

    def log(self, event: LogEvent) -> None:
        """Buffer one log record."""
        with self._lock:
            self._logs.append(event)
            full = len(self._logs) >= self._batch
        self._flush_if(full)

    def _flush_if(self, batch_full: bool) -> None:
        # Metrics go out on the interval only (like OTel's periodic metric reader); a
        # full batch of spans or logs is written without them.
        if self.due():
            self.flush()
        elif batch_full:
            self._write(with_metrics=False)

    def due(self) -> bool:
        """Whether the interval passed since the last write of metrics."""
        return time.monotonic() - self._last_flush >= self._interval

    def flush(self) -> None:
        """Append the buffered requests to the file (errors are logged)."""
        self._write(with_metrics=True)

    def _write(self, with_metrics: bool) -> None:
        with self._lock:
            spans, self._spans = self._spans, []
            logs, self._logs = self._logs, []
            if with_metrics:
                self._last_flush = time.monotonic()
        try:
            metrics = self._metrics.drain() if with_metrics else []
            if not (spans or logs or metrics):
                return
            if self._resource is None:
                self._resource = resource_json(resource_attributes(self._settings))
            resource, scope_ = self._resource, scope_json(scope())
            lines = []
            if spans:
                lines.append(encode_spans(resource, scope_, spans))
            if metrics:
                lines.append(encode_metrics(resource, scope_, metrics))
            if logs:
                lines.append(encode_logs(resource, scope_, logs))
            self._append(lines)
        except OSError as exc:  # a full disk, a planted FIFO: said, never raised
            records_lost(f"the telemetry file {self.path}", exc)
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning("could not write telemetry to %s", self.path, exc_info=True)

    def _append(self, requests: list[str]) -> None:
        data = "".join(line + "\n" for line in requests).encode()
        with self._write_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size + len(data) > self._max_bytes:
                    self._rotate(fd)
                    os.close(fd)
                    fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                append_whole(fd, data)  # half a line would be read as a damaged one
            finally:
                os.close(fd)

    def _rotate(self, fd: int) -> None:
        # Still holding the lock on the old file: only one process renames it.
        if os.path.exists(self.path) and os.path.samestat(os.fstat(fd), os.stat(self.path)):
            os.replace(self.path, f"{self.path}.1")

    def close(self) -> None:
        """Flush; later records are still accepted and written by the next flush."""
        self.flush()

"""The embedded default: OTLP export requests as JSON lines in a local file.

No OpenTelemetry SDK or protobuf is imported (start-up time of `stockade run`).
Spans and logs are buffered up to the profile's batch size, metrics aggregated as
deltas and written on the profile's interval (and at `flush`); a write appends up to
three lines (traces, metrics, logs) under an exclusive `flock`, so processes can share
the file. Past `max_bytes` the file is rotated to `<name>.1`. Write failures are said
on stderr (at most once a minute), never raised; the file must be a regular file
(`regularfile.open_regular`) in a directory only this user can write (the audit log's
rule, `regularfile.private_dir`).

A run writes on the thread that records (`stockade run` starts no thread for it). A
server writes from a thread of the sink's own (`write_in_background`): a request never
waits for the file (a disk that stalls, the lock held by another worker or process);
what the writer has not taken yet is bounded, `QUEUED_BATCHES` batches of spans and of
logs, past which records are dropped and said (metrics are aggregates: never dropped).
The writer is woken for `WAKE_BATCHES` batches, not for each, and on the interval: each
time it runs it takes the interpreter's lock from the serving thread at each of its
system calls (a gateway's hello in-process paid ~10 µs when it woke for every batch).
Either way the file's lock is waited for `LOCK_WAIT` seconds at most: a process holding
it costs the records of that write (said), never a run or a server's stop that long.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from ..errors import UsageError
from ..regularfile import append_lines, lock_within, open_regular, private_dir
from .aggregate import DeltaAggregator
from .instruments import bounded_name
from .log import logger, rare_warning, records_lost
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

TYPE_CHECKING = False
if TYPE_CHECKING:

    from ..observe import RunInfo
    from ..result import Result
    from .record import InvocationRecord, LogEvent, SpanData
    from .settings import ExportSettings

__all__ = ["FileSink", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 64 * 1024**2
_ENTROPY_BLOCK = 24 * 64
QUEUED_BATCHES = 16  # batches of spans (and of logs) a background writer may fall behind
WAKE_BATCHES = QUEUED_BATCHES // 2  # batches waiting that wake it before its interval
LOCK_WAIT = 5.0  # seconds a write waits for the file's lock (a write holds it milliseconds)
_STOP_WAIT = LOCK_WAIT + 1.0  # seconds `close` waits for the background writer's last write
_LONGEST_SLEEP = 60.0  # the background writer looks at its interval at least this often
_SINKS: weakref.WeakSet[FileSink] = weakref.WeakSet()


def _forget_entropy_after_fork() -> None:
    # A forked child must not hand out the ids its parent will also use, and has no
    # writer thread (it writes on its own threads), nor the locks a parent's thread held.
    for sink in list(_SINKS):
        sink._entropy, sink._entropy_at = b"", 0
        sink._writer = None
        sink._lock, sink._write_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_entropy_after_fork)


class FileSink:
    """Appends OTLP/JSON requests to `settings.file`, sampling spans at the settings'
    ratio (metrics and logs are never sampled)."""

    def __init__(self, settings: ExportSettings, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = settings.file
        # The state directory's file keeps the audit log's rule; one a user named is
        # where they chose (a shared /tmp included).
        self._private = "file" not in settings.sources
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
        self._writer: threading.Thread | None = None  # see `write_in_background`
        self._wake = threading.Event()
        self._stopping = False
        self._dropped = 0  # spans and logs the background writer had no room for
        _SINKS.add(self)

    def write_in_background(self) -> None:
        """Write from a thread of the sink's own from now on (until `close`), never on
        the threads that record (see the module docstring). Safe twice."""
        with self._lock:
            if self._writer is not None:
                return
            self._stopping = False
            writer = threading.Thread(target=self._writing, daemon=True,
                                      name="stockade-telemetry-writer")
            try:
                writer.start()
            except RuntimeError as exc:  # no thread: records are written as they come
                logger().warning("telemetry: no writer thread (%s); writing inline", exc)
                return
            self._writer = writer

    def _writing(self) -> None:
        """The background writer: on the interval, and when `WAKE_BATCHES` wait. Should
        it end otherwise than by `close` (what no `except Exception` catches), the
        recording threads write again, as records come (`_flush_if`)."""
        try:
            while not self._stopping:
                left = self._interval - (time.monotonic() - self._last_flush)
                self._wake.wait(min(max(left, 0.01), _LONGEST_SLEEP))
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    self._write_due()
                except Exception:  # noqa: BLE001 - the writer outlives any one write
                    logger().warning("could not write telemetry to %s", self.path,
                                     exc_info=True)
        finally:
            with self._lock:
                if self._writer is threading.current_thread():
                    self._writer = None

    def _write_due(self) -> None:
        """The background writer's turn: what is due, and the drops not said yet."""
        if self.due():
            self.flush()
        elif self._batch_full():
            self._write(with_metrics=False)
        self._say_drops()

    def _say_drops(self) -> None:
        """Say the records dropped for want of room (counted until said: the lines are
        rare)."""
        dropped = self._dropped
        if dropped and rare_warning(f"dropped:{self.path}", f"telemetry: {dropped} spans and "
                                    f"logs were dropped: writing {self.path} fell behind",
                                    f"at most {QUEUED_BATCHES} batches wait for it"):
            with self._lock:
                self._dropped -= dropped

    def _batch_full(self) -> bool:
        with self._lock:
            return len(self._spans) >= self._batch or len(self._logs) >= self._batch

    def _queued(self, queue: list[str] | list[LogEvent]) -> bool:
        """Whether one more record fits in `queue` (the lock held): always, unless a
        background writer fell `QUEUED_BATCHES` behind (then it is counted, dropped)."""
        writer = self._writer
        if len(queue) < self._batch * QUEUED_BATCHES or writer is None \
                or not writer.is_alive():
            return True
        self._dropped += 1
        return False

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
        self._flush_if(0)
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
            self._flush_if(0)
            return
        with self._lock:
            if self._queued(self._spans):
                self._spans.append(text)
            waiting = len(self._spans)
        self._flush_if(waiting)

    def log(self, event: LogEvent) -> None:
        """Buffer one log record."""
        with self._lock:
            if self._queued(self._logs):
                self._logs.append(event)
            waiting = len(self._logs)
        self._flush_if(waiting)

    def _flush_if(self, waiting: int) -> None:
        """After a record, `waiting` spans or logs in its queue: write what is due."""
        # Metrics go out on the interval only (like OTel's periodic metric reader); a
        # full batch of spans or logs is written without them.
        writer = self._writer
        if writer is not None:  # the writer's to do, while it lives
            if waiting < self._batch:
                return
            if writer.is_alive():  # asked from a full batch on: a dead one is found then
                if waiting >= self._batch * WAKE_BATCHES:
                    self._wake.set()
                return
            self._writer = None  # it died: written as records come from now on
        if self.due():
            self.flush()
        elif waiting >= self._batch:
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
        except (OSError, UsageError) as exc:  # a full disk, a planted FIFO, an open
            # directory: said, never raised
            records_lost(f"the telemetry file {self.path}", exc)
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning("could not write telemetry to %s", self.path, exc_info=True)

    def _append(self, requests: list[str]) -> None:
        data = "".join(line + "\n" for line in requests).encode()
        with self._write_lock:
            if self._private:
                private_dir(self.path.parent)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                lock_within(fd, LOCK_WAIT)
                if os.fstat(fd).st_size + len(data) > self._max_bytes:
                    self._rotate(fd)
                    os.close(fd)
                    fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                    lock_within(fd, LOCK_WAIT)
                append_lines(fd, data)  # half a line would be read as a damaged one
            finally:
                os.close(fd)

    def _rotate(self, fd: int) -> None:
        # Still holding the lock on the old file: only one process renames it.
        if os.path.exists(self.path) and os.path.samestat(os.fstat(fd), os.stat(self.path)):
            os.replace(self.path, f"{self.path}.1")

    def close(self) -> None:
        """Stop the background writer, if any, and flush; later records are still
        accepted and written by the next flush (on the thread that records)."""
        writer = self._writer
        if writer is not None:
            self._stopping = True
            self._wake.set()
            writer.join(_STOP_WAIT)  # a held lock: the flush below waits its turn
            self._writer = None
        self.flush()
        self._say_drops()

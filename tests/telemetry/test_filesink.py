"""The embedded default: OTLP/JSON lines in a local file, read back by `read_summary`."""

from __future__ import annotations

import base64
import importlib
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from stockade.result import Outcome, Usage
from stockade.telemetry import FileSink, open_telemetry, read_summary, resolve_settings
from stockade.telemetry.otlpjson import span_json
from stockade.telemetry.reader import attributes_of
from stockade.telemetry.record import InvocationRecord

from .receiver import attrs
from .runs import DIGEST, make_run

json_format: Any = importlib.import_module("google.protobuf.json_format")  # no stubs
_TYPES: dict[str, Any] = {"resourceSpans": ExportTraceServiceRequest,
          "resourceMetrics": ExportMetricsServiceRequest,
          "resourceLogs": ExportLogsServiceRequest}


def _record(sink: FileSink, count: int = 1) -> None:
    """Record `count` finished runs (made by `make_run`) in `sink`."""
    for _ in range(count):
        info, result = make_run()
        sink.record(InvocationRecord.build(info, result))


def _ids_to_base64(data: Any) -> Any:
    # OTLP/JSON writes ids as hex; protobuf's canonical JSON expects base64 bytes.
    if isinstance(data, dict):
        return {k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId") else _ids_to_base64(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_ids_to_base64(v) for v in data]
    return data


def parse_lines(path: Path) -> list[Any]:
    """Each line as the protobuf export request it encodes (strict: unknown keys fail)."""
    messages = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        (key,) = data
        messages.append(json_format.Parse(json.dumps(_ids_to_base64(data)), _TYPES[key]()))
    return messages


def record_all(outcomes: list[Outcome], profile: str | None = None) -> Path:
    with open_telemetry(profile) as telemetry:
        for outcome in outcomes:
            info, result = make_run(outcome)
            telemetry.observer.run_started(info)
            telemetry.observer.run_finished(info, result)
    return telemetry.settings.file


def test_without_endpoint_requests_go_to_the_state_directory(tmp_path: Path) -> None:
    path = record_all([Outcome.EXITED, Outcome.TIMEOUT, Outcome.MEMORY_LIMIT])
    assert path == tmp_path / "state" / "telemetry.jsonl"
    traces, metrics, logs = parse_lines(path)
    assert isinstance(traces, ExportTraceServiceRequest)
    spans = traces.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 3 and len(spans[0].trace_id) == 16 and len(spans[0].span_id) == 8
    first = attrs(spans[0].attributes)
    assert first["stockade.module.sha256"] == DIGEST
    assert first["faas.max_memory"] == 128 * 1024**2  # int64 survives as a decimal string
    assert spans[1].status.code == 2 and attrs(spans[1].attributes)["stockade.limit.hit"] == (
        "timeout")
    names = {m.name for m in metrics.resource_metrics[0].scope_metrics[0].metrics}
    assert {"faas.invoke_duration", "faas.invocations", "stockade.violations"} <= names
    records = logs.resource_logs[0].scope_logs[0].log_records
    assert [attrs(r.attributes)["stockade.audit.outcome"] for r in records] == [
        "timeout", "memory_limit"]


def test_the_file_needs_no_sdk_and_few_modules(tmp_path: Path) -> None:
    # Start-up time of `stockade run`: no SDK, protobuf or gRPC, nor modules it does not use.
    code = (
        "import sys\n"
        "sys.path.insert(0, '.')\n"
        "from tests.telemetry.runs import make_run\n"
        "before = set(sys.modules)\n"
        "from stockade.telemetry import open_telemetry\n"
        "t = open_telemetry()\n"
        "info, result = make_run()\n"
        "t.admit(info.module, info.sha256)\n"
        "t.observer.run_started(info); t.observer.run_finished(info, result); t.close()\n"
        "heavy = ('opentelemetry', 'google', 'grpc', 'importlib.metadata', 'platform',\n"
        "         'stockade.telemetry.reader', 'stockade.telemetry.protections',\n"
        "         'stockade.telemetry.audit', 'rich')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, check=True)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "state" / "telemetry.jsonl").exists()


def test_the_span_template_writes_the_sdk_attributes() -> None:
    info, result = make_run(Outcome.MEMORY_LIMIT, tenant="t\u00e9nant \"q\"")
    info.events.append(("custom", {"note": "x", "time_unix_nano": 5}))
    record = InvocationRecord.build(info, result)
    record.trace_id, record.span_id = 1, 2
    span = json.loads(span_json(record))
    assert attributes_of(span["attributes"]) == record.attributes
    assert span["events"] == [{"timeUnixNano": "5", "name": "custom",
                               "attributes": [{"key": "note", "value": {"stringValue": "x"}}]}]
    assert span["status"] == {"code": 2, "message": "memory_limit"}
    assert (span["traceId"], span["spanId"]) == ("0" * 31 + "1", "0" * 15 + "2")


def test_a_count_not_known_is_no_attribute_rather_than_zero() -> None:
    # A run without fuel, or one whose count the engine lost (`traps.fuel_consumed`):
    # 0 would read as a guest that ran no instruction.
    info, result = make_run(Outcome.TRAP, usage=Usage(wall_ms=1.0, fuel_consumed=None))
    record = InvocationRecord.build(info, result)
    span = json.loads(span_json(record))
    assert attributes_of(span["attributes"]) == record.attributes
    assert "stockade.fuel.consumed" not in record.attributes


def test_summary_reads_outcomes_percentiles_and_violations() -> None:
    path = record_all([Outcome.EXITED] * 8 + [Outcome.TIMEOUT, Outcome.DISK_QUOTA])
    summary = read_summary(path, recent=5)
    assert summary.invocations == 10 and summary.spans == 10
    assert summary.outcomes == {"exited": 8, "timeout": 1, "disk_quota": 1}
    assert summary.violations == {"timeout": 1, "disk_quota": 1}
    assert summary.p50_ms is not None and summary.p99_ms is not None
    assert summary.p50_ms <= summary.p99_ms
    assert len(summary.recent) == 5 and summary.bad_lines == 0


def test_file_sink_samples_spans_but_counts_every_invocation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    summary = read_summary(record_all([Outcome.EXITED] * 2000))
    assert summary.invocations == 2000
    assert 140 <= summary.spans <= 260


def test_batches_flush_at_the_batch_size(tmp_path: Path) -> None:
    settings = resolve_settings("edge", env={"OTEL_TRACES_SAMPLER": "always_on",
                                             "STOCKADE_TELEMETRY_FILE": str(tmp_path / "t")})
    sink = FileSink(settings)
    _record(sink, 70)
    # two full batches of 32 were written on the way; 6 spans wait for close()
    spans_per_line = [len(m.resource_spans[0].scope_spans[0].spans)
                      for m in parse_lines(tmp_path / "t")
                      if isinstance(m, ExportTraceServiceRequest)]
    assert spans_per_line == [32, 32]
    # Metrics wait for the interval (5 s at the edge) or close(), not for span batches.
    assert not any(isinstance(m, ExportMetricsServiceRequest)
                   for m in parse_lines(tmp_path / "t"))
    sink.close()
    assert read_summary(tmp_path / "t").spans == 70
    assert read_summary(tmp_path / "t").invocations == 70


def test_file_is_rotated_past_its_size(tmp_path: Path) -> None:
    settings = resolve_settings(env={"STOCKADE_TELEMETRY_FILE": str(tmp_path / "t.jsonl")})
    sink = FileSink(settings, max_bytes=20_000)
    for _ in range(10):
        _record(sink)
        sink.flush()
    assert (tmp_path / "t.jsonl.1").exists()
    assert (tmp_path / "t.jsonl").stat().st_size <= 20_000
    assert read_summary(tmp_path / "t.jsonl").lines > 0


def _writer(path: str, count: int) -> None:
    settings = resolve_settings(env={"STOCKADE_TELEMETRY_FILE": path})
    sink = FileSink(settings)
    for _ in range(count):
        _record(sink)
        sink.flush()


def test_processes_share_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, 50)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    summary = read_summary(path)
    assert summary.bad_lines == 0 and summary.invocations == 150 and summary.spans == 150


def _background_sink(tmp_path: Path, interval_ms: str = "200") -> FileSink:
    settings = resolve_settings("edge", env={"OTEL_TRACES_SAMPLER": "always_on",
                                             "OTEL_METRIC_EXPORT_INTERVAL": interval_ms,
                                             "STOCKADE_TELEMETRY_FILE": str(tmp_path / "t")})
    sink = FileSink(settings)
    sink.write_in_background()
    return sink


def test_a_background_writer_writes_on_its_interval_without_more_records(
        tmp_path: Path) -> None:
    import threading
    import time

    sink = _background_sink(tmp_path)
    try:
        writers = [t for t in threading.enumerate() if t.name == "stockade-telemetry-writer"]
        assert len(writers) == 1
        sink.write_in_background()  # twice: still one writer
        assert [t for t in threading.enumerate()
                if t.name == "stockade-telemetry-writer"] == writers
        _record(sink, 3)
        assert not (tmp_path / "t").exists()  # nothing written by the recording thread
        deadline = time.monotonic() + 10
        while not (tmp_path / "t").exists() or read_summary(tmp_path / "t").invocations < 3:
            assert time.monotonic() < deadline, "the writer wrote nothing on its interval"
            time.sleep(0.05)
        assert read_summary(tmp_path / "t").spans == 3
    finally:
        sink.close()
    assert not writers[0].is_alive()
    _record(sink)  # after close: written by the recording thread again
    sink.close()
    assert read_summary(tmp_path / "t").invocations == 4


def test_a_background_writer_is_woken_for_several_batches_not_each(tmp_path: Path) -> None:
    """Each wake of the writer takes the interpreter's lock from the serving thread at
    each of its system calls: woken for every batch (32 spans), it cost a gateway's hello
    ~10 µs in-process. Before its interval, it now writes once `WAKE_BATCHES` batches wait."""
    import time

    from stockade.telemetry.filesink import WAKE_BATCHES

    batch = 32  # the edge profile's
    sink = _background_sink(tmp_path, "600000")
    try:
        _record(sink, batch * WAKE_BATCHES - 1)
        time.sleep(0.5)  # a writer woken by a full batch has written by now
        assert not (tmp_path / "t").exists()
        _record(sink)
        deadline = time.monotonic() + 10
        while not (tmp_path / "t").exists() or \
                read_summary(tmp_path / "t").spans < batch * WAKE_BATCHES:
            assert time.monotonic() < deadline, "the writer was not woken"
            time.sleep(0.02)
    finally:
        sink.close()


def test_a_writer_that_died_unnoticed_is_found_at_a_full_batch(tmp_path: Path) -> None:
    """A writer thread that ended without its own `finally` (an asynchronous exception
    there): the recording thread finds it dead at a full batch and writes, as before
    the writer was woken for several (found by review)."""
    import threading

    sink = _background_sink(tmp_path, "600000")
    try:
        writer = sink._writer
        assert writer is not None
        sink._stopping = True
        sink._wake.set()
        writer.join(10)
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        sink._writer, sink._stopping = dead, False  # ended, and not cleared
        _record(sink, 32)  # the edge profile's batch
        assert read_summary(tmp_path / "t").spans == 32  # written by this thread
    finally:
        sink.close()


def test_a_stuck_background_writer_drops_spans_past_its_queue(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The file's lock held elsewhere: records keep coming, the writer cannot write.
    What waits for it is bounded (the records past it dropped and said), the recording
    thread never waits, and the metrics, aggregates, lose nothing."""
    import fcntl
    import time

    from stockade.telemetry.filesink import QUEUED_BATCHES

    (tmp_path / "t").touch()
    sink = _background_sink(tmp_path, "100")
    batch = 32  # the edge profile's
    count = batch * QUEUED_BATCHES + 500
    try:
        with (tmp_path / "t").open("ab") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            time.sleep(0.3)  # the writer now waits for the lock, holding what it took
            start = time.monotonic()
            _record(sink, count)
            recording = time.monotonic() - start
            queued = len(sink._spans)
            fcntl.flock(held, fcntl.LOCK_UN)
        assert queued <= batch * QUEUED_BATCHES
        assert recording < 30  # it never waited for the lock (a wait would be forever)
    finally:
        sink.close()
    summary = read_summary(tmp_path / "t")
    assert summary.invocations == count  # metrics are aggregates: all counted
    assert summary.spans < count  # spans past the queue were dropped
    assert any("spans and logs were dropped: writing" in line for line in caplog.messages)


def test_a_forked_child_writes_on_its_own_thread(tmp_path: Path) -> None:
    import os

    sink = _background_sink(tmp_path, "60000")
    try:
        pid = os.fork()
        if pid == 0:  # the child: no writer thread came with it
            code = 1
            try:
                _record(sink)
                sink.flush()
                code = 0 if read_summary(tmp_path / "t").invocations == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        sink.close()


def test_a_held_lock_costs_a_write_not_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A process holding the file's lock held every write (a run's exit, a server's stop)
    for as long as it liked; a write now waits `LOCK_WAIT` seconds, then its records are
    lost and said."""
    import fcntl
    import time

    from stockade.telemetry import filesink

    monkeypatch.setattr(filesink, "LOCK_WAIT", 0.5)  # 5 s here: the test need not wait
    LOCK_WAIT = 0.5

    for background in (False, True):
        path = tmp_path / f"t{background}"  # a line per file and minute says it
        path.touch()
        sink = FileSink(resolve_settings("edge", env={"OTEL_TRACES_SAMPLER": "always_on",
                                                      "STOCKADE_TELEMETRY_FILE": str(path)}))
        if background:
            sink.write_in_background()
        _record(sink)
        with path.open("rb") as held:  # a read-only descriptor is enough
            fcntl.flock(held, fcntl.LOCK_EX)
            start = time.monotonic()
            sink.close()
            took = time.monotonic() - start
        assert took < 3 * LOCK_WAIT + 2, took
        assert any("its lock was held elsewhere" in line for line in caplog.messages)
        assert path.stat().st_size == 0  # nothing half-written meanwhile
        caplog.clear()


@pytest.mark.parametrize(("key", "value"), [
    ("OTEL_METRIC_EXPORT_INTERVAL", "inf"), ("OTEL_METRIC_EXPORT_INTERVAL", "nan"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1e13"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000000"),
])
def test_numbers_past_their_ceilings_are_refused(key: str, value: str) -> None:
    # An infinite interval killed the background writer (`Event.wait` overflowed), a
    # `nan` one spun it on a core (found by review).
    from stockade.errors import UsageError

    with pytest.raises(UsageError, match=f"{key}=.*must be positive and at most"):
        resolve_settings("edge", env={key: value})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_records_after_the_writer_died_are_written_on_the_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer thread ended by what no `except Exception` catches left the records
    waiting until a whole batch filled (32 spans of the edge profile): a quiet server's
    requests were never written. Its end hands the writing back to the recording threads."""
    import threading
    import time

    sink = _background_sink(tmp_path, "50")
    try:
        def ended(self: FileSink) -> None:
            raise SystemExit("the writer ends")

        monkeypatch.setattr(FileSink, "_write_due", ended)
        (writer,) = [t for t in threading.enumerate() if t.name == "stockade-telemetry-writer"]
        writer.join(10)
        assert not writer.is_alive()
        monkeypatch.undo()
        time.sleep(0.1)  # the interval has passed: the next record writes what is due
        _record(sink)
        assert read_summary(tmp_path / "t").invocations == 1  # written by this thread
    finally:
        sink.close()


def test_a_file_the_user_named_is_written_where_they_chose(tmp_path: Path) -> None:
    """The state directory's file keeps the audit log's rule (a directory others can
    write is refused: `test_state_files_attack`); a file named by STOCKADE_TELEMETRY_FILE
    is written where the user chose, a shared directory included."""
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o1777)
    sink = FileSink(resolve_settings(env={"STOCKADE_TELEMETRY_FILE": str(open_dir / "t")}))
    _record(sink)
    sink.close()
    assert read_summary(open_dir / "t").spans == 1

"""A hostile or broken collector costs an exporter bounded memory and time, and its
failures are said while the process runs: real misbehaving servers on loopback, the real
OTLP exporters behind `open_telemetry`."""

from __future__ import annotations

import importlib
import logging
import re
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import pytest

from stockade.telemetry import open_telemetry, sdksink
from stockade.telemetry.pipeline import Telemetry
from tests.conftest import guest, stockade

from .receiver import HttpReceiver
from .runs import make_run

grpc: Any = importlib.import_module("grpc")  # no type stubs installed

MiB = 1024 * 1024
Reply = Callable[[socket.socket, threading.Event], None]


def _read_request(stream: Any) -> dict[str, str] | None:
    """One HTTP request's headers (lower-case names), its body read and dropped; None
    once the client has closed the connection."""
    line = stream.readline(65537)
    if not line:
        return None
    headers: dict[str, str] = {}
    while (line := stream.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    stream.read(int(headers.get("content-length", "0")))
    return headers


class Collector:
    """A misbehaving OTLP/HTTP collector on a loopback port: it reads each request whole
    and answers with `reply(connection, stop)`; `requests` holds the requests' headers."""

    def __init__(self, reply: Reply) -> None:
        self.requests: list[dict[str, str]] = []
        self.stop = threading.Event()
        collector = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                connection: socket.socket = self.request
                connection.settimeout(30)
                with connection.makefile("rb") as stream:
                    try:
                        while not collector.stop.is_set():
                            headers = _read_request(stream)
                            if headers is None:
                                return
                            collector.requests.append(headers)
                            reply(connection, collector.stop)
                    except OSError:  # the exporter hung up: what a bounded one does
                        return

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def huge_reply(size: int) -> Reply:
    """200 with a body of `size` zero bytes, its real length announced."""
    def reply(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                           b"Content-Length: %d\r\n\r\n" % size)
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            if stop.is_set():
                return
            connection.sendall(chunk)
    return reply


def status_reply(status: str, *headers: str) -> Reply:
    """`status` with an empty body."""
    head = "".join(f"{header}\r\n" for header in headers)
    def reply(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(f"HTTP/1.1 {status}\r\n{head}Content-Length: 0\r\n\r\n".encode())
    return reply


def trickle_reply(where: str) -> Reply:
    """One byte every half second, forever: of the status line and headers (`head`), or of
    a body announced as a megabyte (`body`)."""
    def reply(connection: socket.socket, stop: threading.Event) -> None:
        if where == "body":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            endless = b"\0"
        else:
            for byte in b"HTTP/1.1 200 OK\r\n":
                connection.sendall(bytes([byte]))
                if stop.wait(0.5):
                    return
            endless = b"a"
            connection.sendall(b"X-Slow: ")
        while not stop.wait(0.5):
            connection.sendall(endless)
    return reply


@contextmanager
def exporting(endpoint: str, **env: str) -> Iterator[Telemetry]:
    """Telemetry exporting over OTLP/HTTP to `endpoint` with a 1 s export timeout, one run
    recorded (a span, its metrics)."""
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TIMEOUT": "1000", **env}
    telemetry = open_telemetry("cloud", endpoint=endpoint, env=environ, monitor=False,
                               breaker=False, audit=False)
    try:
        assert isinstance(telemetry.sink, sdksink.SdkSink)
        record_run(telemetry)
        yield telemetry
    finally:
        telemetry.close()


def record_run(telemetry: Telemetry) -> None:
    info, result = make_run()
    telemetry.observer.run_started(info)
    telemetry.observer.run_finished(info, result)


def export_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stockade.otlp"]


def test_a_huge_reply_body_is_not_read_into_memory() -> None:
    with Collector(huge_reply(128 * MiB)) as collector, \
            exporting(collector.endpoint) as telemetry:
        tracemalloc.start()
        try:
            telemetry.sink.flush()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert collector.requests  # the exports reached it
    # Reading the bodies whole peaked above 128 MiB; a bounded prefix is 64 KiB.
    assert peak < 16 * MiB, peak


def test_a_redirect_is_a_failed_export_and_never_followed(
        http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    target = f"Location: {http_receiver.endpoint}/v1/traces"
    with caplog.at_level(logging.WARNING, "stockade.otlp"), \
            Collector(status_reply("307 Temporary Redirect", target)) as collector:
        with exporting(collector.endpoint,
                       OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20secret") as telemetry:
            telemetry.sink.flush()
        assert collector.requests[0]["authorization"] == "Bearer secret"
    assert http_receiver.received == []  # the credentials went nowhere else
    lines = export_lines(caplog)
    assert lines and all("307" in line for line in lines), lines


def test_a_collector_s_reason_phrase_cannot_write_to_the_terminal(
        caplog: pytest.LogCaptureFixture) -> None:
    # Its cursor-up and erase-line codes went to stderr as they were, rewriting the lines
    # above the warning; and a collector that answered at once was told to wait longer.
    reason = "400 \x1b[1A\x1b[2Kstockade: run OK\x1b[8m\r"
    with caplog.at_level(logging.WARNING, "stockade.otlp"), \
            Collector(status_reply(reason)) as collector:
        with exporting(collector.endpoint) as telemetry:
            record_run(telemetry)
    lines = export_lines(caplog)
    assert lines and all("\x1b" not in line and "\r" not in line for line in lines), lines
    assert any("\\x1b[1A" in line for line in lines), lines
    assert "wait longer" not in lines[-1], lines


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickling_collector_cannot_hold_an_export_past_its_deadline(
        where: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "stockade.otlp"), \
            Collector(trickle_reply(where)) as collector:
        with exporting(collector.endpoint) as telemetry:
            flushing = threading.Thread(target=telemetry.sink.flush, daemon=True)
            start = time.monotonic()
            flushing.start()
            # Traces, metrics and logs in turn, 1 s each at most; generous for a loaded box.
            flushing.join(12)
            assert not flushing.is_alive(), "an export is still reading the trickle"
            assert time.monotonic() - start < 12
        assert collector.requests
    lines = export_lines(caplog)
    assert lines and "deadline" in lines[-1], lines


def test_failures_are_said_while_running_at_most_once_an_interval(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The interval is a minute; two seconds here (raising=False: it is new).
    monkeypatch.setattr(sdksink, "REPORT_INTERVAL", 2.0, raising=False)
    with caplog.at_level(logging.WARNING, "stockade.otlp"), \
            Collector(status_reply("400 Bad Request")) as collector, \
            exporting(collector.endpoint) as telemetry:
        telemetry.sink.flush()
        lines = export_lines(caplog)
        assert len(lines) == 1, lines  # said at once, while running
        assert "400" in lines[0] and "failed" in lines[0], lines
        record_run(telemetry)
        telemetry.sink.flush()
        assert len(export_lines(caplog)) == 1  # not again within the interval
        time.sleep(2.2)
        record_run(telemetry)
        telemetry.sink.flush()
        lines = export_lines(caplog)
        assert len(lines) == 2, lines
        counted = re.search(r"(\d+) failed since", lines[1])
        assert counted and int(counted.group(1)) >= 2, lines  # both flushes' failures
        caplog.clear()
    (closing,) = export_lines(caplog)  # the metrics exported at close fail too
    assert closing.startswith("telemetry: could not export to"), closing
    assert "this run" not in closing and "failed earlier" in closing, closing


def _big_reply_grpc_server() -> tuple[Any, str]:
    """The collector's three gRPC services, each answering with a 1 MiB partial-success
    message (a legitimate reply is a few bytes)."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    message = "x" * MiB
    services = [
        (trace_service_pb2_grpc, "TraceService", trace_service_pb2.ExportTraceServiceResponse(
            partial_success=trace_service_pb2.ExportTracePartialSuccess(error_message=message))),
        (metrics_service_pb2_grpc, "MetricsService",
         metrics_service_pb2.ExportMetricsServiceResponse(
             partial_success=metrics_service_pb2.ExportMetricsPartialSuccess(
                 error_message=message))),
        (logs_service_pb2_grpc, "LogsService", logs_service_pb2.ExportLogsServiceResponse(
            partial_success=logs_service_pb2.ExportLogsPartialSuccess(error_message=message))),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for module, name, response in services:
        def export(servicer: Any, request: Any, context: Any, response: Any = response) -> Any:
            return response

        servicer = type(name, (getattr(module, f"{name}Servicer"),), {"Export": export})()
        getattr(module, f"add_{name}Servicer_to_server")(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"http://127.0.0.1:{port}"


def test_a_grpc_reply_is_bounded_too(caplog: pytest.LogCaptureFixture) -> None:
    server, endpoint = _big_reply_grpc_server()
    try:
        with caplog.at_level(logging.WARNING, "stockade.otlp"), \
                exporting(endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") as telemetry:
            telemetry.sink.flush()
    finally:
        server.stop(grace=None).wait()
    lines = export_lines(caplog)
    assert lines and "RESOURCE_EXHAUSTED" in " ".join(lines), lines


def test_a_collector_cannot_plant_cookies() -> None:
    # Each reply could add cookies to a jar kept for the process's life, sent back after.
    with Collector(status_reply("200 OK", "Set-Cookie: planted=" + "x" * 4000)) as collector:
        with exporting(collector.endpoint) as telemetry:
            telemetry.sink.flush()
            record_run(telemetry)
            telemetry.sink.flush()
        assert len(collector.requests) >= 2
    assert not any("cookie" in headers for headers in collector.requests)


def test_a_grpc_status_detail_cannot_write_to_the_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A malformed retry-info trailer made the SDK's metrics reader log the exporter's
    # exception with its traceback, which held the collector's detail unescaped: escape
    # codes on the user's terminal (found by review).
    def abort(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata([("google.rpc.retryinfo-bin", b"\xff\xff\xff\xff")])
        context.abort(grpc.StatusCode.UNAVAILABLE, "\x1b[2J\x1b]0;pwn\x07 details")
        return b""

    class Hostile(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                abort, request_deserializer=bytes, response_serializer=bytes)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((Hostile(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    try:
        done = stockade("run", str(guest("hello.wasm")))
    finally:
        server.stop(grace=None).wait()
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stderr and b"\x07" not in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr

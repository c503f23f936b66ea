"""A real OTLP receiver for tests: the collector's gRPC services and the OTLP/HTTP
endpoints, decoding the real protobuf messages (gzip included)."""

from __future__ import annotations

import gzip
import importlib
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["Received", "Receiver", "GrpcReceiver", "HttpReceiver", "attrs"]

grpc: Any = importlib.import_module("grpc")  # no type stubs installed
_REQUESTS: dict[str, tuple[Any, Any]] = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest,
               trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest,
             logs_service_pb2.ExportLogsServiceResponse),
}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attrs(items: Any) -> dict[str, Any]:
    """A dict from a repeated `KeyValue` field."""
    return {kv.key: _value(kv.value) for kv in items if isinstance(kv, KeyValue)}


@dataclass
class Received:
    """One export request as it arrived."""

    signal: str
    transport: str
    encoding: str | None
    request: Any


class Receiver:
    """Collects requests; `wait_for` blocks until a condition holds (or a time bound)."""

    transport = ""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self.endpoint = ""

    def add(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def wait_for(self, condition: Callable[[Receiver], bool], bound: float = 20.0) -> bool:
        """True once `condition(self)` holds; False if it still does not after `bound` s."""
        deadline = time.monotonic() + bound
        with self._cond:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def of(self, signal: str) -> list[Received]:
        """Requests of one signal (`traces`, `metrics`, `logs`)."""
        with self._cond:
            return [r for r in self.received if r.signal == signal]

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out: list[tuple[dict[str, Any], Any]] = []
        for item in self.of("traces"):
            for rs in item.request.resource_spans:
                resource = attrs(rs.resource.attributes)
                out.extend((resource, span) for ss in rs.scope_spans for span in ss.spans)
        return out

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> every `Metric` message received under it."""
        out: dict[str, list[Any]] = {}
        for item in self.of("metrics"):
            for rm in item.request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        out.setdefault(metric.name, []).append(metric)
        return out

    def logs(self) -> list[Any]:
        """Every log record received."""
        return [record for item in self.of("logs") for rl in item.request.resource_logs
                for sl in rl.scope_logs for record in sl.log_records]

    def close(self) -> None:
        """Stop serving."""


class GrpcReceiver(Receiver):
    """The OTLP collector's Trace, Metrics and Logs gRPC services on a loopback port."""

    transport = "grpc"

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        def servicer(base: type, signal: str) -> Any:
            response = _REQUESTS[signal][1]

            class Servicer(base):  # type: ignore[misc]
                def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                    meta = dict(context.invocation_metadata())
                    receiver.add(Received(signal, "grpc", meta.get("grpc-encoding"), request))
                    return response()

            return Servicer()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        services: list[tuple[Any, Any, str]] = [
            (trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
             trace_service_pb2_grpc.TraceServiceServicer, "traces"),
            (metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server,
             metrics_service_pb2_grpc.MetricsServiceServicer, "metrics"),
            (logs_service_pb2_grpc.add_LogsServiceServicer_to_server,
             logs_service_pb2_grpc.LogsServiceServicer, "logs"),
        ]
        for register, base, signal in services:
            register(servicer(base, signal), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self._server.stop(grace=None).wait()


class HttpReceiver(Receiver):
    """OTLP/HTTP: POST /v1/{traces,metrics,logs} with protobuf bodies, gzip or not."""

    transport = "http"

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                signal = self.path.rstrip("/").rsplit("/", 1)[-1]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                if signal not in _REQUESTS or self.headers.get_content_type() != (
                        "application/x-protobuf"):
                    self.send_error(404)
                    return
                request_type, response_type = _REQUESTS[signal]
                request = request_type()
                request.ParseFromString(body)
                receiver.add(Received(signal, "http", encoding, request))
                payload = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def main() -> None:
    """Serve in a process of its own: `python -m tests.telemetry.receiver grpc|http`.
    Prints the endpoint, then counts requests until standard input closes, and prints
    how many arrived per signal."""
    import sys

    receiver: Receiver = GrpcReceiver() if sys.argv[1:] == ["grpc"] else HttpReceiver()
    print(receiver.endpoint, flush=True)
    sys.stdin.read()
    counts = {signal: len(receiver.of(signal)) for signal in _REQUESTS}
    receiver.close()
    print(counts, flush=True)


if __name__ == "__main__":
    main()

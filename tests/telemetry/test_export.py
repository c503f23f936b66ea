"""Export through the OpenTelemetry SDK to a real OTLP receiver, over gRPC and HTTP."""

from __future__ import annotations

import pytest

from stockade.result import Outcome
from stockade.telemetry import open_telemetry

from .receiver import GrpcReceiver, HttpReceiver, Receiver, attrs
from .runs import DIGEST, make_run

SPAN_KEYS = {
    "faas.invocation_id", "faas.coldstart", "faas.name", "faas.max_memory",
    "stockade.module.sha256", "stockade.outcome", "stockade.fuel.consumed",
    "stockade.memory.peak", "stockade.limit.hit",
}
METRICS = {
    "faas.invoke_duration", "faas.cpu_usage", "faas.mem_usage", "faas.invocations",
    "stockade.fuel.consumed", "stockade.files.created", "stockade.bytes.written",
    "stockade.violations",
}


def record_runs(profile: str, endpoint: str, outcomes: list[Outcome]) -> None:
    with open_telemetry(profile, endpoint=endpoint) as telemetry:
        for outcome in outcomes:
            info, result = make_run(outcome)
            telemetry.observer.run_started(info)
            telemetry.observer.run_finished(info, result)


def check_invocations(receiver: Receiver, count: int) -> None:
    spans = receiver.spans()
    assert len(spans) == count
    resource, span = spans[0]
    assert resource["service.name"] == "stockade"
    assert resource["virtualization.type"] in ("bare-metal", "vm", "container", "wasm")
    assert {"isolation.level", "hypervisor.type", "host.name", "os.type"} <= set(resource)
    span_attrs = attrs(span.attributes)
    assert SPAN_KEYS <= set(span_attrs)
    assert span_attrs["stockade.module.sha256"] == DIGEST
    assert span_attrs["faas.max_memory"] == 128 * 1024**2
    assert span_attrs["stockade.fuel.consumed"] == 12345
    metrics = receiver.metrics()
    assert METRICS <= set(metrics)
    invocations = sum(p.as_int for m in metrics["faas.invocations"] for p in m.sum.data_points)
    assert invocations == count
    kinds = {attrs(p.attributes)["stockade.violation.kind"]
             for m in metrics["stockade.violations"] for p in m.sum.data_points}
    assert kinds == {"timeout"}
    duration = metrics["faas.invoke_duration"][0].histogram.data_points[0]
    assert set(attrs(duration.attributes)) == {"faas.name", "stockade.outcome"}


def test_cloud_profile_exports_over_grpc(grpc_receiver: GrpcReceiver) -> None:
    record_runs("cloud", grpc_receiver.endpoint, [Outcome.EXITED, Outcome.TIMEOUT])
    assert grpc_receiver.wait_for(lambda r: bool(r.of("metrics")) and bool(r.logs()))
    assert {r.transport for r in grpc_receiver.received} == {"grpc"}
    check_invocations(grpc_receiver, 2)
    # the timeout is a security event: an audit log record tied to its span
    (log,) = grpc_receiver.logs()
    violation = next(s for _, s in grpc_receiver.spans()
                     if attrs(s.attributes)["stockade.outcome"] == "timeout")
    assert log.trace_id == violation.trace_id
    assert attrs(log.attributes)["stockade.audit.kind"] == "violation"


def test_edge_profile_sends_gzip_over_http_in_batches_of_32(
        http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep every trace so that there are enough spans to need several batches.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    record_runs("edge", http_receiver.endpoint, [Outcome.EXITED] * 99 + [Outcome.TIMEOUT])
    assert http_receiver.wait_for(lambda r: len(r.spans()) == 100 and bool(r.of("metrics")))
    traces = http_receiver.of("traces")
    sizes = [sum(len(ss.spans) for rs in t.request.resource_spans for ss in rs.scope_spans)
             for t in traces]
    assert max(sizes) <= 32 and len(traces) >= 4
    assert {r.encoding for r in http_receiver.received} == {"gzip"}
    assert {r.transport for r in http_receiver.received} == {"http"}
    check_invocations(http_receiver, 100)


def test_endpoint_from_otel_environment(http_receiver: HttpReceiver,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-functions")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    with open_telemetry("cloud") as telemetry:  # grpc by profile, http by environment
        info, result = make_run()
        telemetry.observer.run_finished(info, result)
    assert http_receiver.wait_for(lambda r: len(r.spans()) == 1)
    resource, _ = http_receiver.spans()[0]
    assert resource["service.name"] == "edge-functions"
    assert resource["deployment.environment"] == "test"
    assert resource["stockade.telemetry.profile"] == "cloud"


def test_sampling_ratio_keeps_a_tenth(http_receiver: HttpReceiver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    record_runs("cloud", http_receiver.endpoint, [Outcome.EXITED] * 2000)
    assert http_receiver.wait_for(
        lambda r: sum(p.as_int for m in r.metrics().get("faas.invocations", [])
                      for p in m.sum.data_points) == 2000)
    kept = len(http_receiver.spans())
    assert 140 <= kept <= 260, kept  # 10% +- 3 points of 2,000

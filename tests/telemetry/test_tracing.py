"""The gateway's server span and the invocation span under it form one trace."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stockade.gateway.invoke import HttpInvocation
from stockade.gateway.tracing import ServerSpan, TraceContext
from stockade.invocation import Invocation
from stockade.telemetry import Telemetry, open_telemetry, read_summary
from stockade.telemetry.record import parse_traceparent

from .receiver import HttpReceiver, attrs
from .runs import make_run

CALLER = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def serve_one(telemetry: Telemetry, caller: bytes | None) -> TraceContext:
    """What the gateway does for one request: a server span, an invocation under it."""
    context = TraceContext.from_headers(caller)
    info, result = make_run()
    info.invocation = HttpInvocation(name="hello", parent=context.as_parent())
    start = time.time_ns()
    telemetry.observer.run_started(info)
    telemetry.observer.run_finished(info, result)
    telemetry.record_server_span(ServerSpan(context, "POST", "/hello", "/hello?x=1", 200,
                                            start, time.time_ns(), "hello"))
    return context


def test_traceparent_parsing() -> None:
    parent = parse_traceparent(CALLER)
    assert parent is not None and parent.sampled
    assert (parent.trace_id, parent.span_id) == (0x4BF92F3577B34DA6A3CE929D0E0E4736,
                                                 0x00F067AA0BA902B7)
    for bad in (None, b"", b"ff-" + CALLER[3:], b"00-" + b"0" * 32 + CALLER[35:], b"00-xyz"):
        assert parse_traceparent(bad) is None


def test_a_traceparent_string_names_the_parent_too(tmp_path: Path) -> None:
    # What a library caller passes: the core Invocation's W3C `traceparent`.
    with open_telemetry() as telemetry:
        info, result = make_run()
        info.invocation = Invocation(name="hello", traceparent=CALLER.decode())
        telemetry.observer.run_finished(info, result)
    line = json.loads((tmp_path / "state" / "telemetry.jsonl").read_text().splitlines()[0])
    (span,) = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert (span["traceId"], span["parentSpanId"]) == (CALLER[3:35].decode(),
                                                        CALLER[36:52].decode())


def test_file_spans_share_the_callers_trace(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        context = serve_one(telemetry, CALLER)
    line = json.loads((tmp_path / "state" / "telemetry.jsonl").read_text().splitlines()[0])
    invocation, server = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert server["traceId"] == invocation["traceId"] == CALLER[3:35].decode()
    assert server["parentSpanId"] == CALLER[36:52].decode()
    assert server["spanId"] == format(context.span_id, "016x") == invocation["parentSpanId"]
    assert server["name"] == "POST /hello"


def test_a_caller_that_does_not_sample_is_followed(tmp_path: Path) -> None:
    with open_telemetry() as telemetry:
        serve_one(telemetry, CALLER[:-2] + b"00")
    lines = (tmp_path / "state" / "telemetry.jsonl").read_text().splitlines()
    assert not any("resourceSpans" in line for line in lines)  # metrics only


def test_sdk_spans_keep_the_gateways_ids(http_receiver: HttpReceiver) -> None:
    with open_telemetry("cloud", endpoint=http_receiver.endpoint,
                        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) as telemetry:
        context = serve_one(telemetry, None)
    assert http_receiver.wait_for(lambda r: len(r.spans()) == 2)
    spans = {span.name: span for _, span in http_receiver.spans()}
    server, invocation = spans["POST /hello"], spans["hello"]
    assert int.from_bytes(server.trace_id, "big") == context.trace_id
    assert int.from_bytes(server.span_id, "big") == context.span_id
    assert server.parent_span_id == b""
    assert invocation.trace_id == server.trace_id
    assert invocation.parent_span_id == server.span_id
    assert attrs(server.attributes)["http.response.status_code"] == 200


def test_a_trace_starting_at_the_gateway_is_kept_or_dropped_whole(tmp_path: Path) -> None:
    # Head sampling: the server span's decision travels to the invocation as its parent.
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    with open_telemetry(env=env) as telemetry:
        contexts = []
        for _ in range(200):
            context = TraceContext.from_headers(None, telemetry.samples)
            assert context.sampled is not None
            assert context.as_parent().sampled is context.sampled
            contexts.append(context)
            info, result = make_run()
            info.invocation = HttpInvocation(name="hello", parent=context.as_parent())
            telemetry.observer.run_finished(info, result)
            if context.sampled:  # what TracingLayer does: unsampled builds no span
                telemetry.record_server_span(ServerSpan(
                    context, "GET", "/hello", "/hello", 200, time.time_ns(), time.time_ns(),
                    "hello"))
    spans = [span for line in (tmp_path / "state" / "telemetry.jsonl").read_text().splitlines()
             for batch in json.loads(line).get("resourceSpans", [])
             for span in batch["scopeSpans"][0]["spans"]]
    kept = {format(c.trace_id, "032x") for c in contexts if c.sampled}
    assert 60 <= len(kept) <= 140
    by_trace: dict[str, int] = {}
    for span in spans:
        by_trace[span["traceId"]] = by_trace.get(span["traceId"], 0) + 1
    assert set(by_trace) == kept and set(by_trace.values()) == {2}


def test_without_a_recorder_the_decision_is_left_open() -> None:
    assert TraceContext.from_headers(None).sampled is None
    assert TraceContext.from_headers(CALLER, lambda _: False).sampled is True


def serve_untrusted(telemetry: Telemetry, caller: bytes) -> TraceContext:
    """A request from a client whose trace context is not believed, sampled here."""
    context = TraceContext.from_headers(caller, lambda _: True, trusted=False)
    telemetry.record_server_span(ServerSpan(context, "GET", "/hello", "/hello", 200,
                                            time.time_ns(), time.time_ns(), "hello"))
    return context


def test_an_untrusted_callers_span_is_linked_not_continued(tmp_path: Path) -> None:
    from .test_filesink import parse_lines

    with open_telemetry(env={"OTEL_TRACES_SAMPLER": "always_on"}) as telemetry:
        context = serve_untrusted(telemetry, CALLER)
    assert context.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736 and context.parent_id == 0
    written = tmp_path / "state" / "telemetry.jsonl"
    line = json.loads(written.read_text().splitlines()[0])
    (server,) = line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert "parentSpanId" not in server
    assert server["links"] == [{"traceId": CALLER[3:35].decode(),
                                "spanId": CALLER[36:52].decode()}]
    parse_lines(written)  # valid OTLP/JSON (the protobuf's strict parse)
    summary = read_summary(written)  # and read whole (`stockade telemetry show`)
    assert summary.lines == 1 and summary.bad_lines == 0
    assert not TraceContext.from_headers(CALLER, trusted=True).linked
    # Only its first 55 bytes are read (a client's header may be KiBs: each was lowered
    # and matched whole, ~56 µs a request for 60 KB).
    long = TraceContext.from_headers(b" " + CALLER + b"x" * 65_000, trusted=False)
    assert long.linked == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    for bad in (b"00-xyz", b"ff-" + CALLER[3:], b"00-" + b"0" * 32 + CALLER[35:]):
        assert TraceContext.from_headers(bad, trusted=False).linked is None


def test_sdk_spans_carry_the_link(http_receiver: HttpReceiver) -> None:
    with open_telemetry("cloud", endpoint=http_receiver.endpoint,
                        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                             "OTEL_TRACES_SAMPLER": "always_on"}) as telemetry:
        context = serve_untrusted(telemetry, CALLER)
    assert http_receiver.wait_for(lambda r: len(r.spans()) == 1)
    ((_, server),) = http_receiver.spans()
    assert int.from_bytes(server.trace_id, "big") == context.trace_id
    ((link),) = server.links
    assert link.trace_id.hex() == CALLER[3:35].decode()
    assert link.span_id.hex() == CALLER[36:52].decode()

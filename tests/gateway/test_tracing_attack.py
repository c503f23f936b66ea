"""A client's trace context costs the gateway what the profile allows, no more (found by
review): the gateway followed any caller's sampled flag, so a client sending
`traceparent: ...-01` had every request recorded (10x the spans), and its 64 KiB paths,
kept whole as `url.path`, rotated the file sink's history of violations away. Sampled
here instead, on its own trace id, a client choosing ids a `traceidratio` sampler keeps
still had every request recorded (the fix's review): a client's context is ignored."""

from __future__ import annotations

import json
from pathlib import Path

from stockade.gateway.forwarded import TrustedProxies
from stockade.gateway.messages import Request
from stockade.gateway.tracing import ServerSpan, TraceContext, Tracer
from stockade.telemetry import open_telemetry
from stockade.telemetry.pipeline import MAX_URL_PATH

CALLER = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = 0x4bf92f3577b34da6a3ce929d0e0e4736


class Recorder:
    """Keeps spans; samples no trace that starts here (a profile's ratio of 0)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def samples(self, trace_id: int) -> bool:
        self.asked.append(trace_id)
        return False

    def record_server_span(self, span: ServerSpan) -> None:
        raise AssertionError("no span is recorded for an unsampled trace")


def _request(peer: str) -> Request:
    return Request("GET", "/hello", "", [(b"traceparent", CALLER)], client=(peer, 40000))


def test_a_clients_trace_context_is_not_believed() -> None:
    recorder = Recorder()
    tracer = Tracer(recorder, TrustedProxies(["10.0.0.0/8"]))
    request = _request("192.0.2.7")
    assert tracer.begin(request) == 0  # not sampled: no span begun
    context = request.state["trace"]
    # A trace of its own, on an id drawn here: no sink samples on the client's id.
    assert context.trace_id != TRACE_ID and context.parent_id == 0
    assert context.sampled is False and recorder.asked == [context.trace_id]
    assert context.linked == (TRACE_ID, 0x00f067aa0ba902b7)  # only a link, if sampled
    assert Tracer(recorder).begin(_request("127.0.0.1")) == 0  # no proxies: nobody trusted


def test_a_trusted_proxys_sampled_flag_is_followed() -> None:
    tracer = Tracer(Recorder(), TrustedProxies(["10.0.0.0/8"]))
    request = _request("10.1.2.3")
    assert tracer.begin(request) > 0
    assert request.state["trace"].sampled is True
    assert request.state["trace"].trace_id == TRACE_ID  # its trace continued
    assert request.state["trace"].linked is None
    unsampled = TraceContext.from_headers(CALLER[:-2] + b"00", lambda _: True)
    assert unsampled.sampled is False


def test_a_spans_path_is_bounded(tmp_path: Path) -> None:
    with open_telemetry("hybrid", env={"STOCKADE_TELEMETRY_FILE": str(tmp_path / "t.jsonl"),
                                       "OTEL_TRACES_SAMPLER": "always_on"}) as telemetry:
        context = TraceContext(TRACE_ID, 0, 7, True)
        telemetry.record_server_span(ServerSpan(context, "GET", "/f", "/f/" + "a" * 65_000,
                                                200, 1, 2, "f"))
    spans = [span for line in (tmp_path / "t.jsonl").read_text().splitlines()
             for resource in json.loads(line).get("resourceSpans", [])
             for scope in resource["scopeSpans"] for span in scope["spans"]]
    paths = [a["value"]["stringValue"] for span in spans for a in span["attributes"]
             if a["key"] == "url.path"]
    assert paths and all(len(path) <= MAX_URL_PATH for path in paths), [len(p) for p in paths]

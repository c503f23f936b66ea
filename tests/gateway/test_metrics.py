"""Prometheus text rendering, summed over worker snapshots."""

from __future__ import annotations

import os

from stockade.gateway.metrics import BUCKETS, Metrics, render

LABELS = (("function", "hello"), ("tenant", "t"))


def test_counters_and_histograms_sum_over_workers() -> None:
    first, second = Metrics(), Metrics()
    for metrics in (first, second):
        metrics.inc("stockade_gateway_requests_total", (*LABELS, ("code", "200")))
        metrics.observe("stockade_gateway_request_duration_seconds", LABELS[:1], 0.002)
    second.observe("stockade_gateway_request_duration_seconds", LABELS[:1], 100.0)
    text = render([first.snapshot(), second.snapshot()])
    assert 'stockade_gateway_requests_total{function="hello",tenant="t",code="200"} 2' in text
    assert 'stockade_gateway_request_duration_seconds_bucket{function="hello",le="0.001"} 0' \
        in text
    assert 'stockade_gateway_request_duration_seconds_bucket{function="hello",le="0.0025"} 2' \
        in text
    assert 'stockade_gateway_request_duration_seconds_bucket{function="hello",le="+Inf"} 3' \
        in text
    assert 'stockade_gateway_request_duration_seconds_count{function="hello"} 3' in text
    assert text.count("_bucket{") == len(BUCKETS) + 1


def test_gauges_of_exited_workers_are_dropped() -> None:
    live, gone = Metrics(), Metrics()
    live.add("stockade_gateway_inflight", LABELS, 1)
    gone.add("stockade_gateway_inflight", LABELS, 5)
    dead = gone.snapshot()
    dead["pid"] = 2**22 + 1  # above the kernel's pid range: never a live process
    assert os.getpid() != dead["pid"]
    text = render([live.snapshot(), dead])
    assert 'stockade_gateway_inflight{function="hello",tenant="t"} 1' in text


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.inc("stockade_gateway_reloads_total", (("result", 'a"b\\c\nd'),))
    assert 'result="a\\"b\\\\c\\nd"' in render([metrics.snapshot()])

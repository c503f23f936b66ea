"""Prometheus text rendering, summed over worker snapshots."""

from __future__ import annotations

import asyncio
import gc
import os
import re
from pathlib import Path

import pytest

from stockade.gateway import invoke, layers
from stockade.gateway.messages import Request
from stockade.gateway.metrics import BUCKETS, Metrics, render
from stockade.gateway.service import GatewayService

from .conftest import module

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


def test_a_kept_cell_is_the_series_reported() -> None:
    metrics = Metrics()
    labels = (*LABELS, ("code", "200"))
    cell = metrics.counter("stockade_gateway_requests_total", labels)
    assert metrics.counter("stockade_gateway_requests_total", labels) is cell
    cell.value += 2
    metrics.inc("stockade_gateway_requests_total", labels)
    data = metrics.histogram("stockade_gateway_request_duration_seconds", LABELS[:1])
    metrics.observe("stockade_gateway_request_duration_seconds", LABELS[:1], 0.002)
    assert metrics.histogram("stockade_gateway_request_duration_seconds", LABELS[:1]) is data
    assert data[-1] == 1
    assert cell.value == 3
    text = render([metrics.snapshot()])
    assert 'stockade_gateway_requests_total{function="hello",tenant="t",code="200"} 3' in text
    assert 'stockade_gateway_request_duration_seconds_count{function="hello"} 1' in text


MANIFEST = """\
[server]
telemetry = "off"

[[function]]
name = "hello"
route = "/hello"
module = "{hello}"

[[function]]
name = "hi"
route = "{route}"
module = "{hello}"
"""


def _value(text: str, series: str) -> float:
    """The value of the one line in a /metrics page that begins with `series` (its name
    and labels, or their beginning)."""
    found = re.findall(rf"^{re.escape(series)}[^ ]* (\S+)$", text, re.MULTILINE)
    assert len(found) == 1, (series, text)
    return float(found[0])


def test_kept_series_count_on_past_the_cache_bound_and_a_reload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Pipeline's and the Invoker's caches of series cells, emptied whenever a request
    # brings a series they do not hold, and routes rebuilt by a reload: every request
    # must still be counted in the series /metrics reports.
    monkeypatch.setattr(layers, "SERIES_CACHE", 1)
    monkeypatch.setattr(invoke, "SERIES_CACHE", 1)
    path = tmp_path / "stockade.toml"
    path.write_text(MANIFEST.format(hello=module("hello"), route="/hi"))
    service = GatewayService(path)
    # Per function, what the requests charged their quotas and what their guests used,
    # summed in the order the counters sum them.
    charged: dict[str, list[float]] = {"hello": [0.0, 0.0], "hi": [0.0, 0.0]}

    async def scenario() -> str:
        service.start()
        await service.started()

        async def requests(*paths: str) -> None:
            assert service.handler is not None
            for _ in range(3):
                for target in paths:
                    request = Request("GET", target, "", [], client=("127.0.0.1", 1),
                                      body_read=True)
                    response = await service.handler(request)
                    assert response.status == (404 if target == "/nope" else 200)
                    if "result" in request.state:
                        sums = charged[request.state["route"].spec.name]
                        sums[0] += request.state["cpu_seconds"]
                        sums[1] += request.state["result"].usage.cpu_ms / 1000

        await requests("/hello", "/hi", "/nope")
        path.write_text(MANIFEST.format(hello=module("hello"), route="/hey"))
        assert await service.reload()
        await requests("/hello", "/hey", "/nope")
        return render([service.metrics.snapshot()])

    try:
        text = asyncio.run(scenario())
    finally:
        service.close()
        gc.unfreeze()  # the service froze what it holds (service._settle)
    for function in ("hello", "hi"):
        labels = f'function="{function}",tenant="default"'
        assert _value(text, f'stockade_gateway_requests_total{{{labels},code="200"}}') == 6
        assert _value(text, "stockade_gateway_invocations_total"
                            f'{{{labels},outcome="exited",executor=') == 6
        assert _value(text, "stockade_gateway_request_duration_seconds_count"
                            f'{{function="{function}"}}') == 6
        quota, guest = charged[function]
        assert _value(text, f"stockade_gateway_quota_cpu_seconds_total{{{labels}}}") == quota
        assert _value(text, f"stockade_gateway_guest_cpu_seconds_total{{{labels}}}") == guest
        assert guest > 0
    assert _value(text, 'stockade_gateway_requests_total{function="",tenant="",code="404"}') \
        == 6

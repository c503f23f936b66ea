"""Telemetry through the gateway: trace context from the request to exported spans, and
the circuit breaker per function and tenant."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .conftest import Gateway, Start, gateway_env, module, violate

MANIFEST = f"""
[server]
workers = 1
trusted_proxies = ["127.0.0.1"]  # the caller whose sampled flag is followed
[tenant.a]
[tenant.b]

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
tenant = "a"

[[function]]
name = "fail-b"
route = "/fail-b"
module = "{module("fail")}"
tenant = "b"
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def spans(state: Path) -> list[dict[str, Any]]:
    """Every span exported to the local OTLP-JSON file."""
    found = []
    for line in (state / "telemetry.jsonl").read_text().splitlines():
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource["scopeSpans"]:
                found += scope["spans"]
    return found


def test_traceparent_reaches_the_exported_spans(start_gateway: Start, tmp_path: Path) -> None:
    gateway = start_gateway(MANIFEST)
    response = gateway.client.get(
        "/hello", headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"})
    assert response.status_code == 200
    assert gateway.stop() == 0  # flushes telemetry
    trace = [span for span in spans(tmp_path / "state") if span["traceId"] == TRACE_ID]
    server = next(span for span in trace if span["parentSpanId"] == CALLER_SPAN)
    invocation = next(span for span in trace if span.get("parentSpanId") == server["spanId"])
    attributes = {a["key"]: a["value"] for a in invocation["attributes"]}
    assert attributes["faas.name"] == {"stringValue": "hello"}
    assert attributes["faas.trigger"] == {"stringValue": "http"}
    assert "faas.coldstart" in attributes


def test_breaker_opens_per_function_and_tenant(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    client = gateway.client
    violate(gateway.url)  # three clients' violations within the window open it
    refused = client.get("/fail", params={"kind": "none"})
    assert refused.status_code == 503 and refused.json()["reason"] == "breaker"
    assert int(refused.headers["retry-after"]) >= 1
    assert "/tmp" not in refused.text
    # The same module for another tenant has its own breaker.
    assert client.get("/fail-b", params={"kind": "none"}).status_code == 200
    assert client.get("/hello").status_code == 200


def _writing_every(tmp_path: Path, shared_cache: Path, interval_ms: int) -> Gateway:
    """A gateway whose telemetry file is written every `interval_ms`."""
    (tmp_path / "stockade.toml").write_text(MANIFEST)
    env = gateway_env(shared_cache, tmp_path / "state")
    env["OTEL_METRIC_EXPORT_INTERVAL"] = str(interval_ms)
    return Gateway(tmp_path / "stockade.toml", env, ())


@contextlib.contextmanager
def _locked_elsewhere(state: Path) -> Iterator[Path]:
    """The telemetry file under `state`, its lock held as another process would hold it
    (released when the block ends)."""
    written = state / "telemetry.jsonl"
    written.parent.mkdir(parents=True, exist_ok=True)
    with written.open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield written


def test_an_idle_worker_writes_what_it_holds(tmp_path: Path, shared_cache: Path) -> None:
    """The file sink wrote only when a record came after its interval: a worker idle after
    a burst held the burst's records, lost if it was killed (found by review)."""
    gateway = _writing_every(tmp_path, shared_cache, 1000)
    try:
        assert gateway.client.get("/fail", params={"kind": "none"}).status_code == 200
        written = tmp_path / "state" / "telemetry.jsonl"
        deadline = time.monotonic() + 20
        while not (written.exists() and b"faas.invocations" in written.read_bytes()):
            assert time.monotonic() < deadline, "nothing written while the worker was idle"
            time.sleep(0.2)
    finally:
        gateway.stop()  # written before: no flush at exit was needed


def test_a_held_telemetry_file_does_not_stop_the_worker(tmp_path: Path,
                                                        shared_cache: Path) -> None:
    """The idle flush ran on the event loop: a process holding the telemetry file's lock
    stopped every request of the worker (the fix's review)."""
    gateway = _writing_every(tmp_path, shared_cache, 1000)
    try:
        assert gateway.client.get("/hello").status_code == 200
        with _locked_elsewhere(tmp_path / "state"):
            assert gateway.client.get("/hello").status_code == 200  # records to flush
            time.sleep(2.5)  # past the interval: the writer is waiting for the lock
            try:
                answered = gateway.client.get("/healthz", timeout=5.0).status_code
            except httpx.TimeoutException:
                answered = 0
        assert answered == 200, "the worker stopped while the telemetry file was locked"
    finally:
        gateway.stop()


def test_requests_never_wait_for_a_held_telemetry_file(tmp_path: Path,
                                                       shared_cache: Path) -> None:
    """A request recorded after the file sink's interval wrote the file on the event
    loop: while another process held the file's lock, every request of the worker
    waited for it."""
    gateway = _writing_every(tmp_path, shared_cache, 500)
    try:
        assert gateway.client.get("/hello").status_code == 200
        with _locked_elsewhere(tmp_path / "state") as written:
            statuses = []
            end = time.monotonic() + 3.0  # six intervals, each request recording
            while time.monotonic() < end:
                try:
                    statuses.append(gateway.client.get("/hello", timeout=2.0).status_code)
                except httpx.TimeoutException:
                    statuses.append(0)
                    break
                time.sleep(0.05)
        assert statuses and set(statuses) == {200}, statuses
        # The lock released, what was recorded meanwhile is written.
        deadline = time.monotonic() + 10
        while written.stat().st_size == 0 or b"faas.invocations" not in written.read_bytes():
            assert time.monotonic() < deadline, "nothing written once the lock was released"
            time.sleep(0.2)
    finally:
        gateway.stop()


def test_a_clients_trace_is_linked_from_the_gateways(tmp_path: Path,
                                                     shared_cache: Path) -> None:
    (tmp_path / "stockade.toml").write_text(MANIFEST.replace(
        'trusted_proxies = ["127.0.0.1"]', 'trusted_proxies = ["192.0.2.0/24"]'))
    env = gateway_env(shared_cache, tmp_path / "state")
    env["OTEL_TRACES_SAMPLER"] = "always_on"
    gateway = Gateway(tmp_path / "stockade.toml", env, ())
    try:
        response = gateway.client.get(
            "/hello", headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-00"})
        assert response.status_code == 200
    finally:
        assert gateway.stop() == 0  # flushes telemetry
    server = next(span for span in spans(tmp_path / "state") if span["name"] == "GET /hello")
    assert server["traceId"] != TRACE_ID and "parentSpanId" not in server
    assert server["links"] == [{"traceId": TRACE_ID, "spanId": CALLER_SPAN}]

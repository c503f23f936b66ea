"""A pool worker that is stopped (SIGSTOP, a tracer) is the host's failure, found within
the pool's grace: not a hang while the request's body is written to it, and not the
guest's timeout, which breakers and the tenant's standing count."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx

from .conftest import Start, module
from .test_pool_backstop import _pool_workers

MANIFEST = f"""
[server]
workers = 1
threads = 4
pool_workers = 1
telemetry = "off"
[tenant.one]

[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
tenant = "one"
isolate = "process"
max_body = "8MiB"
[function.limits]
timeout = "20s"
"""


def _pool_worker(root: int) -> int:
    workers = _pool_workers(root)
    assert len(workers) == 1, workers
    return workers[0]


def _stopped_answer(gateway_url: str, body: bytes) -> tuple[int, float]:
    answer: dict[str, object] = {}

    def post() -> None:
        begun = time.monotonic()
        with httpx.Client(base_url=gateway_url, timeout=60.0) as client:
            answer["status"] = client.post("/echo", content=body).status_code
        answer["took"] = time.monotonic() - begun

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    poster.join(15)  # far less than the function's 20 s timeout
    assert not poster.is_alive(), "the request hung on a stopped pool worker"
    return int(answer["status"]), float(answer["took"])  # type: ignore[arg-type]


def test_a_stopped_pool_worker_fails_the_request_without_blaming_the_guest(
        start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    assert gateway.client.post("/echo", content=b"up").status_code == 200
    worker = _pool_worker(gateway.process.pid)
    os.kill(worker, signal.SIGSTOP)
    try:
        # 8 MiB less a byte: more than the pipe holds, so writing it waits on the worker.
        status, took = _stopped_answer(gateway.url, bytes((8 << 20) - 1))
    finally:
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert status in (500, 502, 503), status  # the host's failure, not a 504 timeout
    assert took < 10, took
    # A replacement serves the next request.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = gateway.client.post("/echo", content=b"again")
        if response.status_code == 200:
            break
        time.sleep(0.2)
    assert response.status_code == 200 and response.content.endswith(b"again")


def test_a_pool_worker_stopped_before_its_answer_is_not_the_guests_timeout(
        start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    assert gateway.client.post("/echo", content=b"up").status_code == 200
    os.kill(_pool_worker(gateway.process.pid), signal.SIGSTOP)
    status, took = _stopped_answer(gateway.url, b"small")  # fits in the pipe
    assert status in (500, 502, 503) and took < 10, (status, took)
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        assert client.post("/echo", content=b"x").status_code in (200, 503)

"""Guest threads: a long guest does not stall a short one on the same worker; a full
queue answers 503."""

from __future__ import annotations

from .conftest import Start, module
from .test_limits import in_background, wait_in_flight

MANIFEST = f"""
[server]
workers = 1
threads = {{threads}}
max_queue = 0
telemetry = "off"

[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
[function.limits]
timeout = "3s"
fuel = "unlimited"

[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
isolate = "none"  # runs inline in the gateway worker: needs no guest thread
"""


def test_a_spinning_guest_does_not_block_a_short_one(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(threads=2))
    thread, statuses = in_background(gateway.client, "/spin")
    wait_in_flight(gateway.client, "spin")
    for _ in range(5):
        assert gateway.client.get("/hello").status_code == 200
    assert thread.is_alive() and statuses == []  # the spinner is still running
    thread.join()
    assert statuses == [504]


def test_a_full_queue_answers_503(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(threads=1))
    thread, statuses = in_background(gateway.client, "/sleep?kind=sleep&s=2")
    wait_in_flight(gateway.client, "sleep")
    response = gateway.client.get("/sleep?kind=sleep&s=2")
    assert response.status_code == 503 and response.json()["reason"] == "queue"
    assert response.headers["retry-after"] == "1"
    assert gateway.client.get("/hello").status_code == 200  # inline: needs no thread
    thread.join()
    assert statuses == [200]

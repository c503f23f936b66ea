"""Both executors behind the same gateway behave alike; the fast path's inline attempt
hands long runs to a guest thread with full limits."""

from __future__ import annotations

import pytest

from .conftest import Start, module

MANIFEST = f"""
[server]
workers = 1
telemetry = "off"

[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"

[[function]]
name = "counter"
route = "/counter"
module = "{module("counter")}"

[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"

[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"
"""


@pytest.mark.parametrize("executor", ["auto", "sandbox"])
def test_same_answers_from_either_executor(start_gateway: Start, executor: str) -> None:
    gateway = start_gateway(MANIFEST, "--executor", executor)
    echo = gateway.client.post("/echo/x?y=1", content=b"payload")
    assert echo.status_code == 200 and echo.text.endswith("\n\npayload")
    assert "PATH_INFO=/x\n" in echo.text and "QUERY_STRING=y=1\n" in echo.text
    assert {gateway.client.get("/counter").text for _ in range(3)} == {"count=1 seen=0\n"}
    # 20 million iterations outgrow the inline budget: the run is redone on a thread.
    spun = gateway.client.get("/spin", params={"n": "20000000"})
    assert spun.status_code == 200 and spun.text.startswith("spun ")
    # Strict functions run in the default cordon's pool, with the same choice inside.
    expected = "pool-sandbox" if executor == "sandbox" else "pool-fast"
    metrics = gateway.client.get("/metrics").text
    assert f'function="echo",tenant="default",outcome="exited",executor="{expected}"' in metrics


def test_capped_host_calls_run_in_the_sandbox(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)  # strict caps poll_oneoff calls; the fast path cannot
    gateway.wait_for_log(r"function sleep runs in the sandbox: it imports poll_oneoff, which")
    assert gateway.client.get("/sleep", params={"kind": "none"}).status_code == 200
    assert 'function="sleep",tenant="default",outcome="exited",executor="pool-sandbox"' \
        in gateway.client.get("/metrics").text


def test_a_sleeping_guest_on_the_fast_path(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.replace(
        'module = "' + module("fail") + '"',
        'module = "' + module("fail") + '"\nprofile = "default"\n'
        '[function.limits]\ntimeout = "500ms"'))
    short = gateway.client.get("/sleep", params={"kind": "sleep", "s": "0"})
    long = gateway.client.get("/sleep", params={"kind": "sleep", "s": "10"})
    assert short.status_code == 200 and long.status_code == 504
    metrics = gateway.client.get("/metrics").text
    assert 'function="sleep",tenant="default",outcome="timeout",executor="fast"' in metrics

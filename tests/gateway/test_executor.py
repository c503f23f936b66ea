"""Both executors behind the same gateway behave alike; the fast path's inline attempt
hands long runs to a guest thread with full limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import guest

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


def test_capped_host_calls_run_metered_on_the_fast_path(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)  # strict caps poll_oneoff calls: a metered run
    assert gateway.client.get("/sleep", params={"kind": "none"}).status_code == 200
    assert 'function="sleep",tenant="default",outcome="exited",executor="pool-fast-metered"' \
        in gateway.client.get("/metrics").text


def test_a_writable_dir_with_quotas_holds_on_the_fast_path(tmp_path: Path,
                                                           start_gateway: Start) -> None:
    # Hostile guests granted a writable directory, in the gateway process: one creates
    # files until it is stopped, one writes until it is stopped. The quotas hold, and the
    # fast path serves them (no second executor behind the gateway).
    spam, fill = tmp_path / "spam", tmp_path / "fill"
    spam.mkdir()
    fill.mkdir()
    gateway = start_gateway(f"""
[server]
workers = 1
telemetry = "off"

[[function]]
name = "spam"
route = "/spam"
module = "{guest("filespam.wasm")}"
profile = "default"
dirs = ["{spam}:/out:rw"]
[function.limits]
max_files = 7

[[function]]
name = "fill"
route = "/fill"
module = "{guest("diskfill.wasm")}"
profile = "default"
dirs = ["{fill}:/out:rw"]
[function.limits]
disk_quota = "256KiB"
""")
    for run in (1, 2):  # the quota counts new files per run: f0..f6, then f7..f13
        spammed = gateway.client.get("/spam")
        assert spammed.status_code == 502, spammed.text
        assert "new-file quota of 7 reached" in str(spammed.json()["detail"])
        assert len(list(spam.iterdir())) == 7 * run
    filled = gateway.client.get("/fill")
    assert filled.status_code == 502, filled.text
    assert (fill / "fill.bin").stat().st_size <= 256 * 1024
    metrics = gateway.client.get("/metrics").text
    for name, outcome in (("spam", "file_quota"), ("fill", "disk_quota")):
        assert (f'function="{name}",tenant="default",outcome="{outcome}",'
                'executor="fast-metered"') in metrics, metrics


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

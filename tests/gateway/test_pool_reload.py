"""A reload keeps the worker pool of a cordon whose functions did not change, processes
and all, and replaces the pools of cordons whose functions or modules changed: every
reload restarted every pool process of every cordon (seconds of start-up and a cold
start for each, under a reload that touched one function)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import Gateway, Start, module
from .test_confine import ran_in
from .test_pool_backstop import _pool_workers

FUNCTION = """
[[function]]
name = "{name}"
route = "/{name}"
module = "{module}"
tenant = "{tenant}"
env_allow = ["STOCKADE_WORKER"]
[function.limits]
timeout = "{timeout}"
"""


def _manifest(one: Path, timeout: str) -> str:
    return ('[server]\nworkers = 1\npool_workers = 1\ntelemetry = "off"\n'
            '[tenant.ta]\ncordon = "a"\n[tenant.tb]\ncordon = "b"\n'
            + FUNCTION.format(name="one", module=one, tenant="ta", timeout="5s")
            + FUNCTION.format(name="two", module=module("echo"), tenant="tb",
                              timeout=timeout))


def _reload(gateway: Gateway) -> None:
    """SIGHUP, and wait until the worker serves the routes built for it."""
    served = gateway.log().count("serving 2 functions")
    gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while gateway.log().count("serving 2 functions") == served:
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.05)


def _settled(gateway: Gateway, done: Callable[[set[int]], bool]) -> set[int]:
    """The gateway's pool processes once `done` holds of them (retired ones end a moment
    after the swap), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while not done(pids := set(_pool_workers(gateway.process.pid))) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _pid(gateway: Gateway, path: str, cordon: str) -> int:
    placed = ran_in(gateway, path)
    assert placed is not None and placed[0] == cordon, placed
    return placed[1]


def test_a_reload_replaces_only_the_pools_that_changed(
        start_gateway: Start, tmp_path: Path) -> None:
    one = tmp_path / "one.wasm"
    shutil.copyfile(module("echo"), one)
    gateway = start_gateway(_manifest(one, "5s"))
    a, b = _pid(gateway, "/one", "a"), _pid(gateway, "/two", "b")
    assert _settled(gateway, lambda pids: pids == {a, b}) == {a, b}

    _reload(gateway)  # nothing changed: both pools kept
    assert (_pid(gateway, "/one", "a"), _pid(gateway, "/two", "b")) == (a, b)
    assert _settled(gateway, lambda pids: pids == {a, b}) == {a, b}

    gateway.manifest.write_text(_manifest(one, "6s"))  # cordon b's function changed
    _reload(gateway)
    assert _pid(gateway, "/one", "a") == a
    b2 = _pid(gateway, "/two", "b")
    assert b2 != b
    assert _settled(gateway, lambda pids: pids == {a, b2}) == {a, b2}

    shutil.copyfile(module("hello"), one)  # cordon a's module changed, not its spec
    _reload(gateway)
    answer = gateway.client.get("/one")
    assert answer.status_code == 200 and not re.search("STOCKADE_WORKER", answer.text)
    assert _pid(gateway, "/two", "b") == b2
    pids = _settled(gateway, lambda pids: a not in pids and len(pids) == 2)
    assert b2 in pids and a not in pids and len(pids) == 2, pids
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert "Traceback" not in gateway.log()

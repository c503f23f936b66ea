"""A pool process started after the routes were built (a replacement) serves the modules
validated then, not what their files hold now: with no reload, a module overwritten by
another ran the other once its process died, and one overwritten by garbage left its
cordon with no process (every run 503 or a hang, the error logged every second)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from stockade.gateway.manifest import load_manifest
from stockade.gateway.pool import WorkerPool, start_pools
from stockade.gateway.problem import Unavailable
from stockade.invocation import Invocation
from stockade.result import Outcome

from .conftest import module

MANIFEST = """
[server]
telemetry = "off"
[[function]]
name = "hello"
route = "/hello"
module = "{hello}"
isolate = "process"
[function.limits]
timeout = "5s"
[[function]]
name = "echo"
route = "/echo"
module = "{echo}"
isolate = "process"
[function.limits]
timeout = "5s"
"""


def _pool(tmp_path: Path) -> tuple[WorkerPool, Path]:
    hello = tmp_path / "hello.wasm"
    shutil.copyfile(module("hello"), hello)
    path = tmp_path / "stockade.toml"
    path.write_text(MANIFEST.format(hello=hello, echo=module("echo")))
    manifest = load_manifest(path)
    pools = start_pools(manifest.functions, "auto", 1)
    return pools["default"], hello


def _kill_process(pool: WorkerPool) -> None:
    for worker in list(pool._all):
        os.kill(worker.pid, signal.SIGKILL)
        while worker.alive:
            time.sleep(0.01)


@pytest.mark.parametrize("change", ["another module", "garbage"])
def test_a_replacement_serves_the_validated_modules_only(
        tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture) -> None:
    pool, hello = _pool(tmp_path)
    specs = {spec.name: spec for spec in pool.specs}
    try:
        said = pool.run(specs["hello"], Invocation(stdin=b"x")).stdout
        if change == "garbage":
            hello.write_bytes(os.urandom(100))
        else:
            shutil.copyfile(module("echo"), hello)
        _kill_process(pool)
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, "stockade.gateway"):
            for _ in range(3):
                with pytest.raises(Unavailable, match="hello.wasm changed|hello"):
                    pool.run(specs["hello"], Invocation(stdin=b"echoed?"))
            # The cordon's other function is served by the replacement.
            result = pool.run(specs["echo"], Invocation(stdin=b"still here"))
        assert result.outcome is Outcome.EXITED and result.stdout.endswith(b"still here"), result
        assert time.monotonic() - began < 8.0
        assert sum("answers 503" in r.getMessage() for r in caplog.records) == 1, \
            [r.getMessage() for r in caplog.records]
        assert said != b"echoed?"
    finally:
        pool.close()


def test_a_retired_pool_ends_its_processes_and_serves_a_late_run(tmp_path: Path) -> None:
    """A reload retires the old pools: idle processes end at once (every reload kept its
    pools for twice the longest timeout: 100 reloads, 202 processes), while a run routed
    before the swap still gets a process of its own."""
    pool, _ = _pool(tmp_path)
    specs = {spec.name: spec for spec in pool.specs}
    try:
        pids = [worker.pid for worker in pool._all]
        pool.retire()
        assert pool.drained
        for pid in pids:
            deadline = time.monotonic() + 5.0
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not os.path.exists(f"/proc/{pid}") or \
                Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        late = pool.run(specs["echo"], Invocation(stdin=b"late"))
        assert late.outcome is Outcome.EXITED and late.stdout.endswith(b"late"), late
        assert pool.drained  # its process ended with the run
    finally:
        pool.close()

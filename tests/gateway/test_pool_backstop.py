"""The 504 backstop does not free a tenant's concurrency slot while its pooled run goes
on: a run that started late (waiting for a pool worker behind another tenant's runs)
outlives the backstop, and until its pool worker has stopped no other run of the tenant
may start."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Start, module
from .test_limits import metric

MANIFEST = f"""
[server]
workers = 1
threads = 4
pool_workers = 2
telemetry = "off"
[tenant.one]
concurrency = 1
[tenant.two]

[[function]]
name = "hog"
route = "/hog"
module = "{module("spin")}"
isolate = "process"
[function.limits]
timeout = "500ms"
fuel = "unlimited"
[[function]]
name = "hog2"
route = "/hog2"
module = "{module("spin")}"
tenant = "two"
isolate = "process"
[function.limits]
timeout = "500ms"
fuel = "unlimited"
[[function]]
name = "stuck"
route = "/stuck"
module = "{module("spin")}"
tenant = "one"
isolate = "process"
[function.limits]
timeout = "1s"
fuel = "unlimited"
[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
tenant = "one"
isolate = "process"
"""


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _pool_workers(root: int) -> list[int]:
    return [pid for pid in _descendants(root)
            if b"poolworker" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return -1
    return int(fields[11]) + int(fields[12])


FREEZER = Path("/sys/fs/cgroup/freezer")


def _freeze(pid: int) -> Path:
    """Freeze `pid` (cgroup v1's freezer): a worker that makes no progress and is not
    stopped, as a guest that ignores its deadline (a stopped worker is the host's
    failure, found by the pool within its grace)."""
    if not (FREEZER / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer on this machine to hold a worker without stopping it")
    group = FREEZER / f"frozen-by-test-{os.getpid()}-{pid}"
    group.mkdir()
    (group / "cgroup.procs").write_text(str(pid))
    (group / "freezer.state").write_text("FROZEN")
    return group


def _killed_while_frozen(pid: int) -> bool:
    """Whether SIGKILL waits for `pid` to thaw (a frozen task takes no signal)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    pending = [int(line.split()[1], 16) for line in status.splitlines()
               if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signal.SIGKILL - 1)) for mask in pending)


def _thaw(group: Path) -> None:
    if not group.exists():
        return
    (group / "freezer.state").write_text("THAWED")
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (FREEZER / "cgroup.procs").write_text(pid)
        except OSError:  # gone meanwhile
            pass
    for _ in range(100):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.alone  # counts processes by their CPU share
def test_a_504_keeps_the_slot_until_the_pool_worker_stopped(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST)
    assert gateway.client.get("/echo").status_code == 200  # the pool is up
    workers = _pool_workers(gateway.process.pid)
    assert len(workers) == 2, workers
    url = gateway.url
    statuses: dict[str, int] = {}

    def get(name: str) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            statuses[name] = client.get(f"/{name}").status_code

    # Both pool workers are busy for half a second (two other tenants: one tenant holds
    # at most one of them): the tenant's run starts late, and its pool worker's deadline
    # falls after the gateway's backstop.
    hogs = [threading.Thread(target=get, args=(name,)) for name in ("hog", "hog2")]
    for hog in hogs:
        hog.start()
    time.sleep(0.1)
    stuck = threading.Thread(target=get, args=("stuck",))
    stuck.start()
    for hog in hogs:
        hog.join()
    # Find the pool worker running it and freeze it: a guest that ignores its deadline,
    # stopped only when the pool kills its worker.
    before = {pid: _cpu_ticks(pid) for pid in workers}
    runner = None
    deadline = time.monotonic() + 10
    while runner is None and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = [pid for pid in workers if _cpu_ticks(pid) > before[pid] + 5]
        runner = busy[0] if busy else None
    assert runner is not None, "no pool worker ran the guest"
    frozen = _freeze(runner)
    admitted_while_running = []
    try:
        # Until the frozen worker is gone (the pool kills it at its deadline + grace,
        # which it takes once thawed).
        deadline = time.monotonic() + 30
        while _running(runner) and time.monotonic() < deadline:
            if _killed_while_frozen(runner):
                _thaw(frozen)
            response = gateway.client.get("/echo")
            if response.status_code == 200 and _running(runner):
                admitted_while_running.append(time.monotonic())
            time.sleep(0.05)
        stuck.join()
    finally:
        _thaw(frozen)
    assert statuses["stuck"] == 504, statuses
    # Concurrency 1: no second run of the tenant while its first still held a worker.
    assert not admitted_while_running
    assert gateway.client.get("/echo").status_code == 200
    # Its quota was charged the whole timeout, and the metric of quota CPU says so (it
    # counted only runs that returned a result).
    charged = metric(gateway.client.get("/metrics").text,
                     "stockade_gateway_quota_cpu_seconds_total", "stuck")
    assert charged == pytest.approx(1.0)

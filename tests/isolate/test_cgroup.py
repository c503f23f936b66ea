"""The worker's cgroup: it holds the worker, its memory limit kills, it is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.devices import IoThrottle, block_devices
from tests.conftest import guest
from tests.isolate.conftest import require

MiB = 1024**2


def _mounts() -> dict[str, Path]:
    """v1 controller (or '' for cgroup2) -> mount point."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, kind, options, *_ = line.split()
        if kind == "cgroup2":
            found[""] = Path(mount)
        elif kind == "cgroup":
            for option in options.split(","):
                found.setdefault(option, Path(mount))
    return found


def _worker_cgroups(sandbox: IsolatedSandbox) -> list[Path]:
    """Directories of the cgroups Stockade made for the current worker."""
    mounts = _mounts()
    paths = []
    for line in sandbox.check("status")["value"]["cgroup"]:
        _, controllers, path = line.split(":", 2)
        if "/stockade-" in path:
            mount = mounts[controllers.split(",")[0]]
            paths.append(mount / path.lstrip("/"))
    return paths


def test_worker_runs_in_its_own_cgroup_which_close_removes() -> None:
    sandbox = IsolatedSandbox(Policy.from_profile("strict"))
    with sandbox:
        require(sandbox, "cgroup memory")
        paths = _worker_cgroups(sandbox)
        assert paths and all(path.is_dir() for path in paths)
        assert len({path.name for path in paths}) == 1
    assert not any(path.exists() for path in paths)


def test_cgroup_memory_limit_kills_and_the_caller_survives() -> None:
    policy = Policy.from_profile("default").with_limits(max_memory=512 * MiB)
    config = IsolationConfig(memory_limit=160 * MiB)
    with IsolatedSandbox(policy, config=config) as sandbox:
        require(sandbox, "cgroup memory")
        result = sandbox.run(guest("memhog.wasm"), Invocation(args=("400",)))
        # The guest's own doing: a memory limit (137), not a usage error (125).
        assert result.outcome is Outcome.MEMORY_LIMIT
        assert result.exit_code == 137
        assert "OOM" in result.message and "160MiB" in result.message
        again = sandbox.run(guest("hello.wasm"))
        assert again.ok


def test_within_the_limit_the_same_guest_finishes() -> None:
    policy = Policy.from_profile("default").with_limits(max_memory=512 * MiB)
    with IsolatedSandbox(policy, config=IsolationConfig(memory_limit=160 * MiB)) as sandbox:
        result = sandbox.run(guest("memhog.wasm"), Invocation(args=("32",)))
        assert result.ok, result.message


def test_cgroup_limits_are_written() -> None:
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        require(sandbox, "cgroup pids")
        paths = {path.parent.name if path.parent.name != "pids" else "pids": path
                 for path in _worker_cgroups(sandbox)}
        pids = [path for path in paths.values() if (path / "pids.max").exists()]
        assert pids and (pids[0] / "pids.max").read_text().strip() == "64"


def test_throttle_lines_for_both_versions() -> None:
    throttle = IoThrottle("254:0", write_bps=1024, write_iops=10)
    assert throttle.v2_line() == "254:0 wbps=1024 wiops=10"
    assert ("blkio.throttle.write_iops_device", "254:0 10") in throttle.v1_lines()
    assert "10 write IOPS" in throttle.describe()


def test_block_devices_are_whole_disks() -> None:
    disks = block_devices([Path("/")])
    if not disks:
        pytest.skip("the root file system has no block device (tmpfs or overlay)")
    major, minor = disks[0].split(":")
    assert not Path(f"/sys/dev/block/{major}:{minor}/partition").exists()

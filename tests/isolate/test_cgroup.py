"""The worker's cgroup: it holds the worker, its memory limit kills, it is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.cgroup import WorkerCgroup
from stockade.isolate.devices import IoThrottle, block_devices
from stockade.observe import RunInfo
from stockade.result import Result
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


def _memory_limit(pid: int) -> int:
    """The memory limit, in bytes, of the cgroup Stockade made for worker `pid`."""
    mounts = _mounts()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "/stockade-" not in path:
            continue
        if "memory" in controllers.split(","):
            return int((mounts["memory"] / path.lstrip("/") / "memory.limit_in_bytes")
                       .read_text())
        if controllers == "" and (mounts[""] / path.lstrip("/") / "memory.max").exists():
            return int((mounts[""] / path.lstrip("/") / "memory.max").read_text())
    raise AssertionError(f"worker {pid} is in no memory cgroup of Stockade's")


class _LimitAtStart:
    """An observer noting, as each guest starts, its worker's cgroup memory limit."""

    def __init__(self) -> None:
        self.limits: list[int] = []

    def run_started(self, info: RunInfo) -> None:
        self.limits.append(_memory_limit(info.pid))

    def run_finished(self, info: RunInfo, result: Result) -> None:
        pass


def test_the_memory_allowed_for_a_large_standard_input_ends_with_its_run() -> None:
    """A standard input larger than the worker's limit less ~30 MiB: taking back what
    was allowed for it failed (v1: EBUSY, the worker still held that input), silently,
    and the next guest ran with the limit raised by twice the input. The next guest
    runs under the configured limit, in a worker replaced if need be."""
    limit = 160 * MiB
    policy = Policy.from_profile("default").with_limits(max_memory=64 * MiB)
    watch = _LimitAtStart()
    config = IsolationConfig(memory_limit=limit)
    with IsolatedSandbox(policy, observers=[watch], config=config) as sandbox:
        require(sandbox, "cgroup memory")
        large = sandbox.run(guest("exitcode.wasm"),
                            Invocation(args=("0",), stdin=bytes(200 * MiB)))
        assert large.outcome is Outcome.EXITED and large.exit_code == 0, large.message
        after = sandbox.run(guest("hello.wasm"), Invocation(stdin=b"after\n"))
        assert after.ok and after.stdout.endswith(b"after\n"), after.message
        assert watch.limits[0] > limit  # what the input was allowed, for its run only
        assert watch.limits[1] == limit, f"the next guest ran under {watch.limits[1]} bytes"


def test_a_worker_lets_go_of_a_large_standard_input_when_its_run_ends() -> None:
    """The worker holds nothing of a run once it has answered, so the memory allowed
    for a large standard input comes back and the worker serves the next run."""
    limit = 160 * MiB
    policy = Policy.from_profile("default").with_limits(max_memory=64 * MiB)
    with IsolatedSandbox(policy, config=IsolationConfig(memory_limit=limit)) as sandbox:
        require(sandbox, "cgroup memory")
        pid = sandbox.worker_pid
        large = sandbox.run(guest("exitcode.wasm"),
                            Invocation(args=("0",), stdin=bytes(200 * MiB)))
        assert large.outcome is Outcome.EXITED and large.exit_code == 0, large.message
        assert sandbox.worker_pid == pid, "the worker could not be brought back under its limit"


def test_a_v2_limit_is_not_lowered_below_what_the_worker_holds(tmp_path: Path) -> None:
    """cgroup v2 takes a `memory.max` below the usage and then OOM-kills the (idle)
    worker, whose next request would be reported as its guest's memory violation: the
    limit is left as it was, as v1 refuses it (EBUSY), and the caller is told."""
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text(f"{300 * MiB}\n")
    group = WorkerCgroup(2, {"memory": tmp_path})
    assert not group.set_memory(160 * MiB)
    assert (tmp_path / "memory.max").read_text() == "max\n"
    assert group.set_memory(512 * MiB)
    assert (tmp_path / "memory.max").read_text() == str(512 * MiB)


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

"""Scratch directories: removed after the run at any depth a guest nests them to, and
what cannot be removed reported in the `Result` and the audit log, never raised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.isolate import IsolatedSandbox
from stockade.observe import RunInfo
from stockade.rmtree import remove_tree
from stockade.telemetry import open_telemetry
from tests.conftest import guest, stockade

DEEP_TREE = "attacks/deep_tree.wasm"


@pytest.mark.parametrize("profile", ["default", "strict"])  # strict: the isolated worker
@pytest.mark.parametrize("depth", [999, 5000])
def test_a_deep_tree_is_removed_after_the_run(tmp_path: Path, tmpdir_env: Path, depth: int,
                                              profile: str) -> None:
    before = tmpdir_env.stat().st_mtime_ns
    # The guest's own time is not what is tested: a loaded host makes 5,000 levels slow.
    done = stockade("run", "--json", "--profile", profile, "--scratch", "/scratch",
                    "--max-files", str(depth + 10), "--timeout", "200s", str(guest(DEEP_TREE)),
                    str(depth), "1", "60", "/scratch", timeout=300)
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["outcome"] == "exited"
    assert f"reached depth {depth}".encode() in result["stdout"].encode()
    assert result["usage"]["files_created"] == depth
    assert "cleanup_error" not in result
    # The run's scratch directory (and the worker's directory holding it, when isolated)
    # was made in this test's TMPDIR, and nothing of either is left there.
    assert tmpdir_env.stat().st_mtime_ns != before
    assert list(tmpdir_env.iterdir()) == []
    telemetry = (tmp_path / "state" / "telemetry.jsonl").read_text()
    assert "deep_tree.wasm" in telemetry


def test_removal_holds_few_descriptors_and_follows_no_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host data")
    tree = tmp_path / "tree"
    tree.mkdir()
    script = (
        "import os, resource, sys\n"
        "from stockade.rmtree import remove_tree\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "for level in range(3000):\n"
        "    os.mkdir('d', dir_fd=fd)\n"
        "    os.symlink(sys.argv[2], 'link', dir_fd=fd)\n"
        "    child = os.open('d', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = child\n"
        "os.close(fd)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (12, 12))\n"
        "print(remove_tree(sys.argv[1]))\n"
    )
    done = subprocess.run([os.sys.executable, "-c", script, str(tree), str(outside)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "None\n", "")
    assert not tree.exists()
    assert (outside / "keep").read_text() == "host data"


def test_read_only_directories_are_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "a" / "b").chmod(0)
    (tree / "a").chmod(0o500)
    assert remove_tree(tree) is None
    assert not tree.exists()
    assert remove_tree(tree) is None  # gone already: nothing to report


class _Planter:
    """An observer that leaves something in the run's scratch directory as it starts."""

    def __init__(self, plant: str, host: Path) -> None:
        self.plant, self.host = plant, host
        self.planted: list[Path] = []

    def run_started(self, info: RunInfo) -> None:
        for scratch in info.writable_dirs:
            if scratch.name.startswith("stockade-scratch-"):
                target = scratch / "stuck"
                if self.plant == "immutable":
                    target.write_text("immutable")
                    subprocess.run(["chattr", "+i", str(target)], check=True)
                else:
                    target.mkdir()
                    subprocess.run(["mount", "--bind", str(self.host),
                                    str(target)], check=True)
                self.planted.append(target)

    def run_finished(self, info: RunInfo, result: Result) -> None:
        pass

    def undo(self) -> None:
        for target in self.planted:
            if self.plant == "immutable":
                subprocess.run(["chattr", "-i", str(target)], check=False)
            else:
                subprocess.run(["umount", str(target)], check=False)
            remove_tree(target.parent)


@pytest.fixture(params=["immutable", "bind_mount"])
def planter(request: pytest.FixtureRequest, tmpdir_env: Path) -> Iterator[_Planter]:
    """Something real the cleanup cannot remove: an immutable file or a bind mount."""
    if os.geteuid() != 0:
        pytest.skip("planting an immutable file or a bind mount needs root")
    tool = "chattr" if request.param == "immutable" else "mount"
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    (tmpdir_env / "host").mkdir()
    (tmpdir_env / "host" / "canary").write_text("host data")
    planter = _Planter(request.param, tmpdir_env / "host")
    yield planter
    planter.undo()


@pytest.mark.parametrize("isolated", [False, True])
def test_a_cleanup_failure_is_in_the_result_and_the_audit_log(
        planter: _Planter, tmpdir_env: Path, isolated: bool) -> None:
    policy = Policy().with_capabilities(scratch="/scratch")
    with open_telemetry() as telemetry:
        observers = (planter, telemetry.observer)
        sandbox = IsolatedSandbox(policy, observers=observers) if isolated \
            else Sandbox(policy, observers=observers)
        with sandbox:
            # The guest sleeps so that the worker is still running it when the parent
            # (which hears of the start asynchronously) plants.
            result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("1",)))
        audit = telemetry.audit.path
    assert planter.planted, "the run had no scratch directory"
    assert result.outcome is Outcome.EXITED  # the guest's own outcome stands
    if isolated and planter.plant == "bind_mount":
        # The worker has a private mount namespace: a mount the host makes after it
        # started is not in its tree, so its run removes what it sees; the host's data
        # stays untouched and the parent reports the mount left in the worker's directory.
        assert result.cleanup_error is None
        assert (tmpdir_env / "host" / "canary").read_text() == "host data"
        return
    assert result.cleanup_error is not None
    assert str(planter.planted[0].parent) in result.cleanup_error
    reason = "Operation not permitted" if planter.plant == "immutable" else "a mount point"
    assert f"stuck: {reason}" in result.cleanup_error
    assert result.to_dict()["cleanup_error"] == result.cleanup_error
    assert (tmpdir_env / "host" / "canary").read_text() == "host data"  # never crossed
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    failed = [r for r in records if r["kind"] == "cleanup_failed"]
    assert [r["message"] for r in failed] == [result.cleanup_error]
    assert failed[0]["module"] == "sleeper.wasm"

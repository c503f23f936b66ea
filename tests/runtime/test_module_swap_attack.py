"""Attack: the module `process.args[0]` names was checked beneath the held rootfs, then
opened again by name for the run (`/proc/PID/fd/ROOTFS/NAME`): whoever can write the
rootfs while the container starts swaps the name for a symlink to a host module, which
then ran, and under `require_signature` the check and the run could read different
files (found by review). The bundle now holds the module's own descriptor."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ..conftest import guest
from .direct import create, host_policy_env, runtime, wait_gone


def _bundle(tmp_path: Path, name: str) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    (bundle / "rootfs" / "bin" / name).write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": [f"/bin/{name}#_start"], "cwd": "/"}}))
    return bundle


@pytest.mark.parametrize("isolate", ["none", "process"])
@pytest.mark.parametrize("swap", ["file", "directory"])
def test_a_module_swapped_after_the_check_is_not_what_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str, isolate: str) -> None:
    from stockade.cli.run import run_observed
    from stockade.invocation import Invocation
    from stockade.runtime.bundle import read_bundle

    for key, value in host_policy_env(tmp_path, tmp_path).items():
        monkeypatch.setenv(key, value)
    bundle = _bundle(tmp_path, "app.wasm")
    host_module = tmp_path / "host" / "bin" / "app.wasm"  # outside the rootfs
    host_module.parent.mkdir(parents=True)
    host_module.write_bytes(guest("exitcode.wasm").read_bytes())
    with read_bundle(bundle) as spec:
        if swap == "file":
            link = bundle / "rootfs" / "bin" / "swap"
            link.symlink_to(host_module)
            os.replace(link, bundle / "rootfs" / "bin" / "app.wasm")
        else:
            os.rename(bundle / "rootfs" / "bin", bundle / "rootfs" / "old")
            (bundle / "rootfs" / "bin").symlink_to(host_module.parent)
        assert spec.module.read_bytes() == guest("hello.wasm").read_bytes()
        result = run_observed(spec.module, spec.policy, Invocation(), isolate, None)
    assert result.exit_code == 0 and b"Hello" in result.stdout
    assert result.module == "app.wasm"  # shown by its name in the bundle


def test_the_held_module_is_let_go_with_the_bundle(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.runtime.bundle import read_bundle

    for key, value in host_policy_env(tmp_path, tmp_path).items():
        monkeypatch.setenv(key, value)
    before = set(os.listdir("/proc/self/fd"))
    spec = read_bundle(_bundle(tmp_path, "app.wasm"))
    spec.close()
    spec.close()
    assert set(os.listdir("/proc/self/fd")) <= before
    assert not spec.module.exists() and not spec.module.parent.exists()


def test_a_killed_container_leaves_no_link_behind(tmp_path: Path) -> None:
    """The module's link was made in the temporary directory: a container killed while
    it ran left it there for good, pointing at `/proc/<its pid>/fd/N`, whatever process
    later had that pid (found by review). It lies in the container's directory now."""
    env = host_policy_env(tmp_path, tmp_path)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "sleeper.wasm").write_bytes(guest("sleeper.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/sleeper.wasm", "30"], "cwd": "/"}}))
    created = create(tmp_path, env, bundle)
    assert created.pid is not None, created.errors.read_text()
    try:
        assert runtime(tmp_path, env, "start", "c1").returncode == 0
        deadline = time.monotonic() + 30
        # Until the started run holds its module (its link made, wherever it is).
        while not [*(tmp_path / "tmp").glob("stockade-module-*/*"),
                   *(tmp_path / "root" / "c1").glob("stockade-module-*/*")]:
            assert time.monotonic() < deadline, created.errors.read_text()
            time.sleep(0.02)
        os.kill(created.pid, signal.SIGKILL)
        wait_gone(created.pid)
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        runtime(tmp_path, env, "delete", "--force", "c1")
        wait_gone(created.pid)
    assert not (tmp_path / "root" / "c1").exists()

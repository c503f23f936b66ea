"""Attacks on the host policy's bound of a bundle (rootfs and bind mounts) and on the
second reading of the bundle at `start`: each asks for more of the host than the
policy's `capabilities.dirs` cover, by another spelling or after `create`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from stockade.errors import PolicyError

from ..conftest import guest
from .direct import create, host_policy_env, runtime, wait_blocked_on_fifo, wait_gone


@pytest.fixture()
def allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the host policy grants read-only (the policy set for this process)."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    env = host_policy_env(tmp_path, allowed)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    return allowed


def make_bundle(where: Path, config: dict[str, Any], name: str = "hello.wasm") -> Path:
    bundle = where / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / name).write_bytes(guest(name).read_bytes())
    full: dict[str, Any] = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                            "process": {"args": [f"/{name}"], "cwd": "/"}}
    full.update(config)
    (bundle / "config.json").write_text(json.dumps(full))
    return bundle


def _rootfs_symlink_to_root(bundle: Path) -> None:
    (bundle / "real").mkdir()
    shutil.move(str(bundle / "rootfs" / "hello.wasm"), bundle / "real" / "hello.wasm")
    (bundle / "rootfs").rmdir()
    (bundle / "rootfs").symlink_to("/")


@pytest.mark.parametrize("config", [
    {"mounts": [{"destination": "/m", "source": "/etc", "options": ["bind", "ro"]}]},
    {"mounts": [{"destination": "/m", "type": "none", "source": "/etc",
                 "options": ["rbind"]}]},
    {"root": {"path": "rootfs/../.."}},
], ids=["bind-option-no-type", "type-none-rbind", "root-dotdot-out"])
def test_another_spelling_of_the_host_is_refused(
        tmp_path: Path, allowed: Path, config: dict[str, Any]) -> None:
    from stockade.runtime.bundle import read_bundle

    bundle = make_bundle(tmp_path, config)
    # rootfs/../.. is tmp_path: the module is found there, so the grants are judged.
    (tmp_path / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    with pytest.raises(PolicyError, match="outside the host policy"):
        read_bundle(bundle)


def test_a_rootfs_symlink_out_of_the_bundle_is_judged_where_it_leads(
        tmp_path: Path, allowed: Path) -> None:
    from stockade.runtime.bundle import read_bundle

    bundle = make_bundle(tmp_path, {"process": {"args": ["/hello.wasm"]}})
    # The module must be found for the bundle to get as far as its grants: put it at /.
    (bundle / "rootfs" / "hello.wasm").unlink()
    (bundle / "rootfs").rmdir()
    (bundle / "rootfs").symlink_to(tmp_path)  # tmp_path holds allowed/ but is not in it
    (tmp_path / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    with pytest.raises(PolicyError, match="rootfs .* outside the host policy"):
        read_bundle(bundle)


def test_a_symlinked_bundle_and_a_dotdot_root_back_inside_are_accepted(
        tmp_path: Path, allowed: Path) -> None:
    from stockade.runtime.bundle import read_bundle

    bundle = make_bundle(tmp_path, {"root": {"path": "rootfs/../rootfs"}})
    link = tmp_path / "link"
    link.symlink_to(bundle)
    with read_bundle(link) as spec:
        # Granted from the descriptor the check was made on, which holds the rootfs.
        held = spec.policy.capabilities.dirs[0].host
        assert Path(os.readlink(held)) == (bundle / "rootfs").resolve()


def test_a_file_mount_source_grants_nothing(tmp_path: Path, allowed: Path) -> None:
    from stockade.runtime.bundle import read_bundle

    with read_bundle(make_bundle(tmp_path, {"mounts": [
        {"destination": "/m", "type": "bind", "source": "/etc/passwd", "options": ["ro"]}]})
    ) as spec:
        assert [g.guest for g in spec.policy.capabilities.dirs] == ["/"]


@pytest.mark.parametrize("config", [
    {"mounts": ["x"]}, {"root": "x"}, {"process": "x"}, {"mounts": "x"},
    {"mounts": [{"type": "bind", "source": "/etc", "destination": "/e", "options": "ro"}]},
    {"linux": {"resources": "x"}}],
    ids=["mount-string", "root-string", "process-string", "mounts-string", "options-string",
         "resources-string"])
def test_a_malformed_config_is_one_line(tmp_path: Path, allowed: Path,
                                        config: dict[str, Any]) -> None:
    done = create(tmp_path, host_policy_env(tmp_path, allowed), make_bundle(tmp_path, config))
    # As a config.json that is not JSON: one line, the unsupported-bundle code.
    stderr = done.errors.read_text()
    assert done.returncode == 78 and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("change", ["mount-added", "rootfs-swapped"])
def test_a_bundle_changed_after_create_is_checked_at_start(
        tmp_path: Path, allowed: Path, change: str) -> None:
    env = host_policy_env(tmp_path, allowed)
    bundle = make_bundle(tmp_path, {"process": {"args": ["/readdir_list.wasm", "/mnt"]}},
                         "readdir_list.wasm")
    created = create(tmp_path, env, bundle)
    assert created.pid is not None, created.errors.read_text()
    wait_blocked_on_fifo(created.pid)
    config = json.loads((bundle / "config.json").read_text())
    if change == "mount-added":
        config["mounts"] = [{"destination": "/mnt", "type": "bind", "source": "/etc",
                             "options": ["rbind", "ro"]}]
    else:
        # The rootfs becomes a link out of the bundle and out of the allowed directory.
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret-outside-allowed").write_text("s")
        shutil.copy(bundle / "rootfs" / "readdir_list.wasm", outside / "readdir_list.wasm")
        shutil.rmtree(bundle / "rootfs")
        (bundle / "rootfs").symlink_to(outside)
        config["process"]["args"] = ["/readdir_list.wasm", "/"]
    (bundle / "config.json").write_text(json.dumps(config))
    runtime(tmp_path, env, "start", "c1")
    wait_gone(created.pid)
    listed = created.output.read_text() + created.errors.read_text()
    assert "passwd" not in listed and "secret-outside-allowed" not in listed, listed
    assert "outside the host policy" in listed, listed

"""A rootfs outside the bundle, under a host policy: allowed without listing when it is
the container engine's own (containers/storage, as Podman lays it out: the bundle at
`<storage>/<driver>-containers/<id>/userdata`, the rootfs under `<storage>/<driver>/`,
the storage this uid's and writable by nobody else). Attacks: the same layout made
where others can write, or pointing elsewhere, still needs the policy's dirs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stockade.errors import PolicyError

from ..conftest import guest
from .direct import host_policy_env

ID = "c0ffee" * 10 + "abcd"


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A containers/storage directory (0700) and a host policy granting another dir."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    env = host_policy_env(tmp_path, allowed)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o700)
    return storage


def lay_out(storage: Path, rootfs: str, driver: str = "vfs") -> Path:
    """The bundle as the engine writes it, its root.path `storage/ROOTFS` (absolute)."""
    bundle = storage / f"{driver}-containers" / ID / "userdata"
    bundle.mkdir(parents=True)
    root = storage / rootfs
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": str(root)},
        "process": {"args": ["/hello.wasm"], "cwd": "/"}}))
    return bundle


def test_the_engines_own_rootfs_needs_no_listing(storage: Path) -> None:
    from stockade.runtime.bundle import read_bundle

    with read_bundle(lay_out(storage, "vfs/dir/layer1")) as spec:
        rootfs = spec.policy.capabilities.dirs[0]
        assert Path(os.readlink(rootfs.host)) == (storage / "vfs/dir/layer1").resolve()


@pytest.mark.parametrize("attack", ["group-writable", "other-owner", "other-driver",
                                    "driver-symlink-out", "rootfs-symlink-out"])
def test_the_same_layout_is_not_enough_when_it_could_be_anyone_s(
        storage: Path, attack: str, tmp_path: Path) -> None:
    from stockade.runtime.bundle import read_bundle

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    bundle = lay_out(storage, "vfs/dir/layer1")
    if attack == "group-writable":
        storage.chmod(0o770)
    elif attack == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another uid needs root; this run is not")
        os.chown(storage, 65534, 65534)
    elif attack == "other-driver":  # the rootfs of another driver's tree
        lay_out_config(bundle, storage / "overlay" / "x")
    elif attack == "driver-symlink-out":
        shutil.rmtree(storage / "vfs")
        (storage / "vfs").symlink_to(outside)
        (outside / "dir" / "layer1").mkdir(parents=True)
        (outside / "dir" / "layer1" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    else:
        shutil.rmtree(storage / "vfs" / "dir" / "layer1")
        (storage / "vfs" / "dir" / "layer1").symlink_to(outside)
    with pytest.raises(PolicyError, match="rootfs .* outside the host policy"):
        read_bundle(bundle).close()


def lay_out_config(bundle: Path, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = str(root)
    (bundle / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(("source", "options", "refused"), [
    ("userdata/shm", ["rbind", "ro"], None),
    ("userdata/shm", ["rbind", "rw"], "grants it read-only|outside the host policy"),
    ("userdata/out", ["rbind", "ro"], "outside the host policy"),
], ids=["own-ro", "own-rw", "own-symlink-out"])
def test_a_mount_of_the_bundles_own_files(storage: Path, tmp_path: Path, source: str,
                                          options: list[str], refused: str | None) -> None:
    """Podman binds `userdata/shm` at /dev/shm: read-only, a mount of the bundle's own
    files needs no listing; written to, or leading out through a symlink, it does."""
    from stockade.runtime.bundle import read_bundle

    bundle = lay_out(storage, "vfs/dir/layer1")
    (bundle / "shm").mkdir()
    (bundle / "out").symlink_to("/etc")
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"] = [{"destination": "/dev/shm", "type": "bind", "options": options,
                         "source": str(bundle.parent / source)}]
    (bundle / "config.json").write_text(json.dumps(config))
    if refused is None:
        with read_bundle(bundle) as spec:
            assert [g.guest for g in spec.policy.capabilities.dirs] == ["/", "/dev/shm"]
    else:
        with pytest.raises(PolicyError, match=refused):
            read_bundle(bundle).close()

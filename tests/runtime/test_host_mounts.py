"""The host policy's `capabilities.dirs` bound a bundle's bind mounts: whoever creates a
container cannot mount more of the host into the guest, or mount it writable, than the
host allows (a symlink inside an allowed directory does not lead out of it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..conftest import guest
from ..oci.fixtures import stockade_env
from .direct import create, host_policy_env


def bundle_with(tmp_path: Path, mounts: list[dict[str, object]]) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/hello.wasm"], "cwd": "/"}, "mounts": mounts}))
    return bundle


@pytest.fixture()
def host(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(an allowed directory with a symlink to /etc inside, the runtime's environment)."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "escape").symlink_to("/etc")
    return allowed, host_policy_env(tmp_path, allowed)


def bind(source: Path | str, *options: str) -> dict[str, object]:
    return {"destination": "/mnt", "type": "bind", "source": str(source),
            "options": ["rbind", *options]}


@pytest.mark.parametrize(("source", "options", "said"), [
    ("/etc", ("ro",), "outside the host policy's capabilities.dirs"),
    ("allowed/escape", ("ro",), "outside the host policy's capabilities.dirs"),
    ("allowed/sub", ("rw",), "the host policy grants it read-only"),
    ("allowed/sub", ("ro", "rw"), "the host policy grants it read-only"),
])
def test_a_mount_the_host_policy_does_not_cover_is_refused(
        tmp_path: Path, host: tuple[Path, dict[str, str]], source: str,
        options: tuple[str, ...], said: str) -> None:
    allowed, env = host
    path = tmp_path / source if source.startswith("allowed") else Path(source)
    done = create(tmp_path, env, bundle_with(tmp_path, [bind(path, *options)]))
    stderr = done.errors.read_text()
    assert done.returncode == 125, stderr
    assert said in stderr and "Traceback" not in stderr
    assert not (tmp_path / "root" / "c1").exists()


def test_a_covered_mount_is_granted_as_asked(
        tmp_path: Path, host: tuple[Path, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.runtime.bundle import read_bundle

    allowed, env = host
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    with read_bundle(bundle_with(tmp_path, [bind(allowed / "sub", "rw", "ro")])) as spec:
        grants = {g.guest: g for g in spec.policy.capabilities.dirs}
        # Granted from the descriptor the check was made on (DirGrant.held).
        assert Path(os.readlink(grants["/mnt"].host)) == (allowed / "sub").resolve()
    assert not grants["/mnt"].writable  # the last of rw/ro wins, as in mount(8)
    assert "/data" not in grants  # the host's dirs bound mounts; they are not granted


def test_an_oversized_config_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, [])
    with open(bundle / "config.json", "r+b") as handle:
        handle.truncate(8 * 1024**3)  # sparse: 8 GiB the runtime must not read
    done = create(tmp_path, stockade_env(tmp_path / "cache", tmp_path / "state"), bundle)
    assert done.returncode == 78, done.errors.read_text()
    assert "larger than 4 MiB" in done.errors.read_text()

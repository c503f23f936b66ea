"""Attack: the host policy's `capabilities.dirs` bound bind mounts, but the rootfs is
granted to the guest (read-only, as `/`) wherever `root.path` points: a bundle whose
`root.path` is `/` (or `../..`) hands the guest the host's whole filesystem."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stockade.errors import StockadeError

from ..conftest import guest
from ..oci.fixtures import stockade_env
from .test_containerd import RUNTIME, _wait_gone


@pytest.mark.parametrize("root", ["/", "../../../../../../../../.."])
def test_a_rootfs_outside_the_bundle_is_not_granted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    from stockade.runtime.bundle import read_bundle

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    policy = tmp_path / "runtime.toml"
    policy.write_text(f'[[capabilities.dirs]]\nhost = "{allowed}"\nguest = "/data"\n'
                      'mode = "ro"\n')
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", str(policy))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    module = tmp_path / "planted" / "ls.wasm"  # any module file on the host will do
    module.parent.mkdir()
    module.write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": root},
        "process": {"args": [str(module), "/etc"], "cwd": "/"}}))
    try:
        spec = read_bundle(bundle)
    except StockadeError:
        return  # refused: nothing of the host is granted
    inside = (allowed, bundle.resolve())
    hosts = {grant.host for grant in spec.policy.capabilities.dirs}
    assert all(any(host == d or d in host.parents for d in inside) for host in hosts), hosts


def test_a_guest_of_a_rootfs_at_slash_cannot_list_the_hosts_etc(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    policy = tmp_path / "runtime.toml"
    policy.write_text(f'[[capabilities.dirs]]\nhost = "{allowed}"\nguest = "/data"\n'
                      'mode = "ro"\n')
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env["STOCKADE_RUNTIME_POLICY"] = str(policy)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    module = tmp_path / "planted" / "ls.wasm"
    module.parent.mkdir()
    module.write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "/"},
        "process": {"args": [str(module), "/etc"], "cwd": "/"}}))
    base = [RUNTIME, "--root", str(tmp_path / "root")]
    output, errors = tmp_path / "out", tmp_path / "err"
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        created = subprocess.run([*base, "create", "--bundle", str(bundle), "--pid-file",
                                  str(tmp_path / "pid"), "c1"], env=env, stdout=stdout,
                                 stderr=stderr, timeout=60, check=False)
    if created.returncode != 0:
        return  # refused at create
    pid = int((tmp_path / "pid").read_text())
    subprocess.run([*base, "start", "c1"], env=env, capture_output=True, timeout=60,
                   check=False)
    _wait_gone(pid)
    assert "passwd" not in output.read_text().splitlines(), output.read_text()[:200]

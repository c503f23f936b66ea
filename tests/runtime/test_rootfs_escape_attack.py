"""Attack: the host policy's `capabilities.dirs` bound bind mounts, but the rootfs is
granted to the guest (read-only, as `/`) wherever `root.path` points: a bundle whose
`root.path` is `/` (or `../..`) hands the guest the host's whole filesystem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stockade.errors import StockadeError

from ..conftest import guest
from .direct import create, host_policy_env, runtime, wait_gone


@pytest.mark.parametrize("root", ["/", "../../../../../../../../.."])
def test_a_rootfs_outside_the_bundle_is_not_granted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    from stockade.runtime.bundle import read_bundle

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    env = host_policy_env(tmp_path, allowed)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
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
    with spec:  # granted from held descriptors: where each leads is what counts
        hosts = {Path(os.readlink(grant.host)) for grant in spec.policy.capabilities.dirs}
    assert all(any(host == d or d in host.parents for d in inside) for host in hosts), hosts


def test_a_guest_of_a_rootfs_at_slash_cannot_list_the_hosts_etc(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    env = host_policy_env(tmp_path, allowed)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    module = tmp_path / "planted" / "ls.wasm"
    module.parent.mkdir()
    module.write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "/"},
        "process": {"args": [str(module), "/etc"], "cwd": "/"}}))
    created = create(tmp_path, env, bundle)
    if created.pid is None:
        return  # refused at create
    runtime(tmp_path, env, "start", "c1")
    wait_gone(created.pid)
    listed = created.output.read_text()
    assert "passwd" not in listed.splitlines(), listed[:200]

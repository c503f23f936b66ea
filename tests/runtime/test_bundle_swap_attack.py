"""Attack: the bundle directory itself swapped, between a directory and a symlink to one
of its ancestors, while the bundle is read. `read_bundle` reads `config.json` by path,
then opens the bundle (`HeldDirs.open(path)`) by path again: config read from the real
bundle, descriptor opened through the symlink. A read-only bind mount "beneath the
bundle" needs no host-policy listing, and beneath the ancestor is a directory the host
policy does not list: it must never be granted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import guest
from .direct import host_policy_env
from .test_mount_race_attack import swap


def test_a_bundle_swapped_for_an_ancestor_never_grants_a_dir_the_policy_does_not_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.errors import StockadeError
    from stockade.invocation import Invocation
    from stockade.runtime.bundle import read_bundle
    from stockade.sandbox import Sandbox

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "rootfs").mkdir(parents=True)
    (allowed / "rootfs" / "ls.wasm").write_bytes(guest("readdir_list.wasm").read_bytes())
    outside.mkdir()
    (outside / "secret-outside-allowed").write_text("s")
    env = host_policy_env(tmp_path, allowed)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    # The rootfs lies where the host policy reaches; the mount's source does not.
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": str(allowed / "rootfs")},
        "process": {"args": ["/ls.wasm", "/mnt"], "cwd": "/"},
        "mounts": [{"destination": "/mnt", "type": "bind", "source": str(outside),
                    "options": ["rbind", "ro"]}]}))
    # Without the swap the mount is refused: the attack needs the race.
    with pytest.raises(StockadeError):
        read_bundle(bundle)
    swapper = swap(tmp_path, "bundle", tmp_path)
    granted: list[str] = []
    try:
        for _ in range(300):
            try:
                spec = read_bundle(bundle)
            except StockadeError:
                continue  # refused, or the bundle was the symlink (no config.json there)
            with spec, Sandbox(spec.policy) as sandbox:
                result = sandbox.run(spec.module, Invocation(args=spec.args))
            granted.append((result.stdout + result.stderr).decode(errors="replace"))
            if len(granted) >= 3:
                break
    finally:
        swapper.kill()
        swapper.wait(10)
    leaked = [out for out in granted if "secret-outside-allowed" in out]
    assert not granted, (f"{len(granted)} bundle(s) read with a bind mount the host policy "
                         f"does not list; the guest listed: {leaked[:1] or granted[:1]}")

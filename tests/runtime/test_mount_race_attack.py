"""Attack: a bind mount's source swapped between a directory and a symlink to a forbidden
host directory in a tight loop, while containers are created and started again and
again. Whatever the moment of the swap, the guest must never list the forbidden
directory: the host policy's decision is made on a descriptor, and the guest's directory
is opened from that same descriptor, not from the path again."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import guest
from .direct import create, host_policy_env, listing_bundle, runtime, wait_gone

# Swaps PARENT/NAME between the directory and a symlink to TARGET, forever: every step
# is one rename, so it is a directory (~2/3 of the time, so that checks pass), a symlink
# (~1/3) or, for an instant, missing.
_SWAPPER = """
import os, sys, time
parent, name, target = sys.argv[1:4]
sub, old, link = (os.path.join(parent, n) for n in (name, ".old", ".link"))
os.symlink(target, link)
while True:
    time.sleep(0.002)
    os.rename(sub, old)
    os.rename(link, sub)
    time.sleep(0.001)
    os.rename(sub, link)
    os.rename(old, sub)
"""


def swap(parent: Path, name: str, target: Path) -> subprocess.Popen[bytes]:
    """Start swapping `parent/name` with a symlink to `target` (kill it when done)."""
    return subprocess.Popen([sys.executable, "-c", _SWAPPER, str(parent), name, str(target)])


@pytest.fixture()
def swapped(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(allowed, outside): `allowed/sub` swapped with a symlink to `outside` meanwhile."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "harmless").write_text("x")
    outside.mkdir()
    (outside / "secret-outside-allowed").write_text("s")
    swapper = swap(allowed, "sub", outside)
    try:
        yield allowed, outside
    finally:
        swapper.kill()
        swapper.wait(10)


def test_a_bundle_read_in_process_under_the_swap_never_grants_the_forbidden_dir(
        tmp_path: Path, swapped: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race, many more rounds, in this process: the bundle read and checked,
    then the guest's directories opened and listed by the sandbox."""
    from stockade.errors import StockadeError
    from stockade.invocation import Invocation
    from stockade.runtime.bundle import read_bundle
    from stockade.sandbox import Sandbox

    allowed, _ = swapped
    env = host_policy_env(tmp_path, allowed)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    bundle = listing_bundle(tmp_path, allowed / "sub")
    ran = 0
    for _ in range(60):
        try:
            spec = read_bundle(bundle)
        except StockadeError:
            continue  # refused: the swap was seen by the check
        with spec, Sandbox(spec.policy) as sandbox:
            result = sandbox.run(spec.module, Invocation(args=spec.args))
        out = (result.stdout + result.stderr).decode(errors="replace")
        assert "secret-outside-allowed" not in out, out
        ran += "harmless" in out
    assert ran


def test_a_rootfs_swapped_in_a_loop_never_shows_or_runs_what_lies_outside(
        tmp_path: Path) -> None:
    """The rootfs (inside the bundle, so needing no listing) swapped with a symlink to a
    directory outside the bundle and the policy, which holds a module of its own and a
    secret: the guest lists and runs only the rootfs that was judged."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret-outside-allowed").write_text("s")
    (outside / "ls.wasm").write_bytes(guest("hello.wasm").read_bytes())
    env = host_policy_env(tmp_path, allowed)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "ls.wasm").write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "rootfs" / "harmless").write_text("x")
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/ls.wasm", "/"], "cwd": "/"}}))
    swapper = swap(bundle, "rootfs", outside)
    try:
        outputs = []
        # At least 12 rounds; on a busy machine the swapper can win all of them, so up
        # to 40 until one also ran the bundle as granted (the race is not always lost).
        for number in range(40):
            if number >= 12 and any("harmless" in out for out in outputs):
                break
            created = create(tmp_path, env, bundle, f"root{number}")
            if created.pid is None:
                continue
            runtime(tmp_path, env, "start", f"root{number}")
            wait_gone(created.pid)
            runtime(tmp_path, env, "delete", "--force", f"root{number}")
            outputs.append(created.output.read_text() + created.errors.read_text())
    finally:
        swapper.kill()
        swapper.wait(10)
    for out in outputs:
        assert "secret-outside-allowed" not in out and "Hello from" not in out, out
    assert any("harmless" in out for out in outputs), "\n---\n".join(outputs)

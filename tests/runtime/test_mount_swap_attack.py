"""Attack: a bind mount checked against the host policy at `create`, swapped for a
symlink out of the allowed directory before `start`. The check resolves the source
once, at `create`; the run opens the grant's path again when the guest starts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..conftest import guest
from ..oci.fixtures import stockade_env
from .test_containerd import RUNTIME, _wait_gone


def test_a_mount_swapped_for_a_symlink_after_create_stays_inside(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "harmless").write_text("x")
    outside.mkdir()
    (outside / "secret-outside-allowed").write_text("s")
    policy = tmp_path / "runtime.toml"
    policy.write_text(f'[[capabilities.dirs]]\nhost = "{allowed}"\nguest = "/data"\n'
                      'mode = "ro"\n')
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env["STOCKADE_RUNTIME_POLICY"] = str(policy)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "ls.wasm").write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/ls.wasm", "/mnt"], "cwd": "/"},
        "mounts": [{"destination": "/mnt", "type": "bind", "source": str(allowed / "sub"),
                    "options": ["rbind", "ro"]}]}))
    base = [RUNTIME, "--root", str(tmp_path / "root")]
    output, errors = tmp_path / "out", tmp_path / "err"
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        created = subprocess.run([*base, "create", "--bundle", str(bundle), "--pid-file",
                                  str(tmp_path / "pid"), "c1"], env=env, stdout=stdout,
                                 stderr=stderr, timeout=60, check=False)
    assert created.returncode == 0, errors.read_text()
    pid = int((tmp_path / "pid").read_text())
    _wait_blocked_on_fifo(pid)  # the bundle was read and checked: now only `start`
    # Whoever may write inside the allowed directory swaps the checked source.
    os.rename(allowed / "sub", allowed / "old")
    (allowed / "sub").symlink_to(outside)
    started = subprocess.run([*base, "start", "c1"], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    _wait_gone(pid)
    listed = output.read_text() + errors.read_text()
    assert started.returncode == 0 or "secret" not in listed
    assert "secret-outside-allowed" not in listed, listed


def _wait_blocked_on_fifo(pid: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/wchan").read_text() in ("wait_for_partner", "fifo_open"):
            return
        time.sleep(0.02)
    raise AssertionError("the container process never waited for start")

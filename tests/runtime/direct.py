"""Driving `stockade-runtime` directly, as a shim would: a host policy that allows one
directory, `create` with the container's stdio in files, and waits on its process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import guest
from ..oci.fixtures import BIN, stockade_env

RUNTIME = str(BIN / "stockade-runtime")


def host_policy_env(tmp_path: Path, allowed: Path, profile: str = "default",
                    ) -> dict[str, str]:
    """The runtime's environment under a host policy granting `allowed` read-only
    (`strict` runs the guest in an isolated worker)."""
    policy = tmp_path / "runtime.toml"
    policy.write_text(f'profile = "{profile}"\n[[capabilities.dirs]]\nhost = "{allowed}"\n'
                      'guest = "/data"\nmode = "ro"\n')
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env["STOCKADE_RUNTIME_POLICY"] = str(policy)
    return env


@dataclass
class Created:
    """What `create` left: its exit code, the container process (None when refused) and
    the files holding the container's stdout and stderr."""

    returncode: int
    pid: int | None
    output: Path
    errors: Path


def listing_bundle(tmp_path: Path, source: Path, writable: bool = False) -> Path:
    """A bundle whose guest lists `/mnt`, a bind mount of `source` (read-only unless
    `writable`)."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "ls.wasm").write_bytes(guest("readdir_list.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/ls.wasm", "/mnt"], "cwd": "/"},
        "mounts": [{"destination": "/mnt", "type": "bind", "source": str(source),
                    "options": ["rbind", "rw" if writable else "ro"]}]}))
    return bundle


def create(tmp_path: Path, env: dict[str, str], bundle: Path, name: str = "c1") -> Created:
    """`stockade-runtime create` of `bundle`, its stdio in files (as under a shim)."""
    output, errors, pid_file = tmp_path / "out", tmp_path / "err", tmp_path / "pid"
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        done = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "create",
                               "--bundle", str(bundle), "--pid-file", str(pid_file), name],
                              env=env, stdout=stdout, stderr=stderr, timeout=60, check=False)
    pid = int(pid_file.read_text()) if done.returncode == 0 else None
    return Created(done.returncode, pid, output, errors)


def runtime(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Another `stockade-runtime` command on the same root (`start c1`, `state c1`…)."""
    return subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def wait_blocked_on_fifo(pid: int) -> None:
    """Until the container process waits for `start` (its bundle read and checked)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/wchan").read_text() in ("wait_for_partner", "fifo_open"):
            return
        time.sleep(0.02)
    raise AssertionError("the container process never waited for start")


def wait_gone(pid: int) -> None:
    """Until the container process has exited (or is a zombie); killed after 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rfind(")") + 2] == "Z":
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the container process did not finish")

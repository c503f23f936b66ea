"""Podman 4.3 runs wasi/wasm images with `--runtime stockade-runtime`.

Podman runs here only in a private mount namespace without the cgroup v1 `unified`
mount, with cgroups disabled and explicit ulimits (design.md, hazards); it then wants the
runtime named in containers.conf's `runtime_supports_nocgroup` (Podman 4.3's spelling of
the key), or it refuses with "not compatible with NoCgroups". Storage is vfs in a temp
dir; the image comes from the test registry over plain HTTP.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.rmtree import remove_tree

from ..conftest import guest
from ..oci.fixtures import Registry, cli, require, stockade_env
from .direct import RUNTIME


class Podman:
    """`run(*args)`: `podman run` in a private mount namespace, as Podman runs here."""

    def __init__(self, base: Path, env: dict[str, str], run: Path,
                 policy: Path | None = None) -> None:
        self.base, self.env, self.run_root = base, env, run
        # conmon gives the runtime a clean environment: a wrapper names Stockade's
        # directories (and the host policy, when given), as an operator's would.
        suffix = "" if policy is None else "-policy"
        wrapper = base / f"stockade-runtime{suffix}"
        named = "" if policy is None else f" STOCKADE_RUNTIME_POLICY={policy}"
        wrapper.write_text(f"#!/bin/sh\nexport STOCKADE_STATE_DIR={env['STOCKADE_STATE_DIR']} "
                           f"STOCKADE_CACHE_DIR={env['STOCKADE_CACHE_DIR']}{named}\n"
                           f'exec {RUNTIME} "$@"\n')
        wrapper.chmod(0o755)
        self.conf = base / f"containers{suffix}.conf"
        self.conf.write_text(
            '[engine]\nruntime_supports_nocgroup = ["stockade-runtime"]\n'
            'runtime_supports_json = ["stockade-runtime"]\n'
            f'[engine.runtimes]\nstockade-runtime = ["{wrapper}"]\n')

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        podman = [require("podman"), "--root", str(self.base / "root"), "--runroot",
                  str(self.run_root), "--storage-driver", "vfs",
                  "--runtime", "stockade-runtime", "run", "--rm", "--cgroups", "disabled",
                  "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                  "--platform", "wasi/wasm", "--tls-verify=false", *args]
        script = ("umount -l /sys/fs/cgroup/unified 2>/dev/null; "
                  f"exec {shlex.join(podman)}")
        return subprocess.run([require("unshare"), "-m", "sh", "-c", script],
                              env={**self.env, "CONTAINERS_CONF": str(self.conf)},
                              capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def podman(registry: Registry, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[Podman, dict[str, str], Path]]:
    """(Podman, image refs by guest name, the runtime's state dir)."""
    if os.geteuid() != 0:
        pytest.skip("Podman runs here only as root (unshare -m, umount); this run is not")
    base = tmp_path_factory.mktemp("podman")
    # Podman refuses a runroot longer than 50 characters: a test process's temp dir
    # (`.../pytest-NN/popen-gw1/podman0/run`) can be longer.
    run = Path(tempfile.mkdtemp(prefix="podman-run-", dir="/tmp"))
    env = stockade_env(base / "cache", base / "state", registry)
    refs = {}
    for name, args in (("hello", ("from-cmd",)), ("exitcode", ("42",)), ("spin", ())):
        ref = f"{registry.host}/podman-{name}:1"
        built = cli(env, "oci", "build", str(guest(f"{name}.wasm")), "--tag", ref, "--format",
                    "image", *(f"--arg={a}" for a in args))
        assert built.returncode == 0, built.stderr
        assert cli(env, "oci", "push", ref).returncode == 0
        refs[name] = ref
    yield Podman(base, env, run), refs, base / "state"
    remove_tree(run)


def test_podman_runs_a_wasm_image_through_stockade(
        podman: tuple[Podman, dict[str, str], Path], tmp_path: Path) -> None:
    runner, refs, state = podman
    cidfile = tmp_path / "cid"
    done = runner.run("--cidfile", str(cidfile), refs["hello"])
    assert done.returncode == 0, done.stderr
    assert "Hello from a Stockade sandbox!" in done.stdout
    assert "arg 1: from-cmd" in done.stdout
    # The run is in Stockade's telemetry, named by the container's id.
    assert cidfile.read_text().strip() in (state / "telemetry.jsonl").read_text()


def test_podman_exit_code_and_cpu_limit(podman: tuple[Podman, dict[str, str], Path]) -> None:
    runner, refs, _ = podman
    assert runner.run(refs["exitcode"]).returncode == 42
    spun = runner.run("--annotation", "io.stockade.timeout=1s", refs["spin"])
    assert spun.returncode == 124, spun.stderr


def test_podman_under_a_host_policy_needs_no_storage_listed(
        podman: tuple[Podman, dict[str, str], Path], tmp_path: Path) -> None:
    """Podman's rootfs lies in its storage, outside the bundle: under a host policy it
    runs without that storage in `capabilities.dirs` (it is the engine's own), while a
    bind mount the policy does not cover is still refused."""
    runner, refs, _ = podman
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    policy = tmp_path / "runtime.toml"
    policy.write_text(f'[[capabilities.dirs]]\nhost = "{allowed}"\nguest = "/data"\n'
                      'mode = "ro"\n')
    guarded = Podman(runner.base, runner.env, runner.run_root, policy)
    done = guarded.run(refs["hello"])
    assert done.returncode == 0, done.stderr
    assert "Hello from a Stockade sandbox!" in done.stdout
    refused = guarded.run("-v", "/etc:/mnt:ro", refs["hello"])
    assert refused.returncode != 0
    assert "outside the host policy" in refused.stderr, refused.stderr

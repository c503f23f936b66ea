"""containerd's own runc shim runs wasi/wasm images with stockade-runtime as its runc:
output, exit codes, the memory limit, a CPU spin, and Stockade's telemetry."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ..conftest import guest
from ..oci.fixtures import Registry, cli, stockade_env
from .conftest import Containerd
from .direct import RUNTIME, wait_gone

_ids = itertools.count()


@pytest.fixture(scope="module")
def images(registry: Registry, containerd: Containerd,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Stockade-built Docker+Wasm images, pushed, then pulled by `ctr` for wasi/wasm."""
    base = tmp_path_factory.mktemp("images")
    env = stockade_env(base / "cache", base / "state", registry)
    refs = {}
    for name, args in (("hello", ("from-cmd",)), ("exitcode", ("42",)), ("memhog", ()),
                       ("spin", ())):
        ref = f"{registry.host}/ctr-{name}:1"
        build = ["oci", "build", str(guest(f"{name}.wasm")), "--tag", ref, "--format", "image"]
        assert cli(env, *build, *(f"--arg={a}" for a in args)).returncode == 0
        assert cli(env, "oci", "push", ref).returncode == 0
        pulled = containerd.ctr("images", "pull", "--plain-http", "--platform", "wasi/wasm", ref)
        assert pulled.returncode == 0, pulled.stderr
        refs[name] = ref
    return refs


def ctr_run(containerd: Containerd, ref: str, *extra: str) -> tuple[str, object]:
    container = f"stockade-test-{next(_ids)}"
    done = containerd.ctr("run", "--rm", "--snapshotter", "native", "--platform", "wasi/wasm",
                          "--runc-binary", RUNTIME, *extra, ref, container)
    return container, done


def test_output_and_cmd_come_back(containerd: Containerd, images: dict[str, str]) -> None:
    container, done = ctr_run(containerd, images["hello"])
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert "Hello from a Stockade sandbox!" in done.stdout  # type: ignore[attr-defined]
    assert "arg 1: from-cmd" in done.stdout  # type: ignore[attr-defined]
    records = (containerd.telemetry / "telemetry.jsonl").read_text()
    assert f'"stringValue":"{container}"' in records


def test_exit_code_is_the_containers(containerd: Containerd, images: dict[str, str]) -> None:
    _, done = ctr_run(containerd, images["exitcode"])
    assert done.returncode == 42, done.stderr  # type: ignore[attr-defined]


def test_memory_limit_stops_a_hog(containerd: Containerd, images: dict[str, str]) -> None:
    _, done = ctr_run(containerd, images["memhog"], "--memory-limit", str(16 * 1024**2))
    assert done.returncode == 137, done.stderr  # type: ignore[attr-defined]
    assert "memory_limit" in done.stderr  # type: ignore[attr-defined]


def test_cpu_spin_is_stopped(containerd: Containerd, images: dict[str, str]) -> None:
    _, done = ctr_run(containerd, images["spin"], "--annotation", "io.stockade.timeout=1s")
    assert done.returncode == 124, done.stderr  # type: ignore[attr-defined]


def test_lifecycle_and_non_wasm_bundle(tmp_path: Path) -> None:
    """The runtime's own command line, as a shim drives it, without containerd."""
    import subprocess

    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "rootfs" / "true").write_bytes(Path("/bin/true").read_bytes())
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    log = tmp_path / "log.json"
    base = [RUNTIME, "--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    def config(program: str) -> None:
        (bundle / "config.json").write_text(json.dumps({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": [program, "x"], "env": ["A=1"], "cwd": "/"}}))

    config("/true")
    refused = run("create", "--bundle", str(bundle), "c0")
    assert refused.returncode == 78
    assert "linux/" in refused.stderr and refused.stderr.count("\n") == 1
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"

    config("/hello.wasm")
    # The container process keeps the stdio it was created with, as under a shim: files.
    output, errors = tmp_path / "out", tmp_path / "err"
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        created = subprocess.run([*base, "create", "--bundle", str(bundle), "--pid-file",
                                  str(tmp_path / "pid"), "c1"], env=env, stdout=stdout,
                                 stderr=stderr, timeout=60, check=False)
    assert created.returncode == 0, errors.read_text()
    pid = int((tmp_path / "pid").read_text())
    assert json.loads(run("state", "c1").stdout)["status"] == "created"
    assert output.read_bytes() == b""  # nothing runs before start
    assert run("start", "c1").returncode == 0
    wait_gone(pid)
    assert b"arg 1: x" in output.read_bytes()
    assert json.loads(run("state", "c1").stdout)["status"] == "stopped"
    assert run("delete", "c1").returncode == 0
    assert run("state", "c1").returncode != 0


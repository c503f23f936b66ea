"""stockade-runtime under a host policy with `[trust]`: containerd's runc shim runs a
signed Wasm image and gets exit 126 for an unsigned one and for a signed one with a
flipped byte; a host policy asking for image signatures is refused as a config error."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest

from ..conftest import guest
from ..oci.fixtures import Registry, cli, stockade_env
from .conftest import Containerd
from .direct import RUNTIME

_ids = itertools.count()


@pytest.fixture(scope="module")
def trusted(registry: Registry, containerd: Containerd,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(a stockade-runtime wrapper with a host policy requiring signatures, image refs)."""
    base = tmp_path_factory.mktemp("trusted")
    env = stockade_env(base / "cache", base / "state", registry)
    assert cli(env, "keygen", str(base / "signer")).returncode == 0
    signed = base / "signed.wasm"
    done = cli(env, "sign", "--key", str(base / "signer"), str(guest("hello.wasm")), "-o",
               str(signed))
    assert done.returncode == 0, done.stderr
    tampered = bytearray(signed.read_bytes())
    tampered[-3] ^= 0x01  # one flipped byte near the end: covered by the signature
    (base / "tampered.wasm").write_bytes(bytes(tampered))
    refs = {}
    for name, module in (("signed", signed), ("unsigned", guest("exitcode.wasm")),
                         ("tampered", base / "tampered.wasm")):
        ref = f"{registry.host}/runtime-trust-{name}:1"
        built = cli(env, "oci", "build", str(module), "--tag", ref, "--format", "image")
        assert built.returncode == 0, built.stderr
        assert cli(env, "oci", "push", ref).returncode == 0
        pulled = containerd.ctr("images", "pull", "--plain-http", "--platform", "wasi/wasm", ref)
        assert pulled.returncode == 0, pulled.stderr
        refs[name] = ref
    policy = base / "runtime.toml"
    policy.write_text(f'[trust]\nrequire_signature = true\nkeys = ["{base}/signer.pub"]\n')
    wrapper = base / "stockade-runtime-trusted"
    wrapper.write_text(f"#!/bin/sh\nSTOCKADE_RUNTIME_POLICY={policy} exec {RUNTIME} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, refs


def ctr_run(containerd: Containerd, runtime: Path, ref: str) -> subprocess.CompletedProcess[str]:
    return containerd.ctr("run", "--rm", "--snapshotter", "native", "--platform", "wasi/wasm",
                          "--runc-binary", str(runtime), ref, f"stockade-trust-{next(_ids)}")


def test_signed_module_runs(containerd: Containerd,
                            trusted: tuple[Path, dict[str, str]]) -> None:
    runtime, refs = trusted
    done = ctr_run(containerd, runtime, refs["signed"])
    assert done.returncode == 0, done.stderr
    assert "Hello from a Stockade sandbox!" in done.stdout


@pytest.mark.parametrize("name", ["unsigned", "tampered"])
def test_unsigned_or_tampered_module_is_denied(containerd: Containerd,
                                               trusted: tuple[Path, dict[str, str]],
                                               name: str) -> None:
    runtime, refs = trusted
    done = ctr_run(containerd, runtime, refs[name])
    assert done.returncode == 126, done.stdout + done.stderr
    assert "signature refused" in done.stderr
    assert "Hello" not in done.stdout
    assert '"denied"' in (containerd.telemetry / "audit.jsonl").read_text()  # recorded


def test_host_policy_requiring_image_signatures_is_a_config_error(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/hello.wasm"], "cwd": "/"}}))
    policy = tmp_path / "runtime.toml"
    (tmp_path / "k.pub").write_text("")
    policy.write_text('[trust]\nrequire_image_signature = true\nkeys = ["k.pub"]\n')
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env["STOCKADE_RUNTIME_POLICY"] = str(policy)
    done = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "create", "--bundle",
                           str(bundle), "c1"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 125
    assert "require_image_signature" in done.stderr and "Traceback" not in done.stderr

"""Trust on images: `run oci://` and gateway `oci://` modules under `[trust]`, with cosign
image signatures and embedded module signatures; the gateway's image lock and SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ..gateway.conftest import FUNCTIONS, Gateway, gateway_env
from .fixtures import Registry, cli
from .test_registry import unique_module
from .test_signatures import PASSWORD, env, key, pushed  # noqa: F401  (fixtures)

__all__ = ["env", "key"]


def sign(env: dict[str, str], key: Path, ref: str) -> None:
    done = cli(env, "oci", "sign", "--key", str(key), ref)
    assert done.returncode == 0, done.stderr


def test_run_under_trust_counts_a_cosign_image_signature(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    repo = f"{registry.host}/trusted-{os.urandom(4).hex()}"
    digest = pushed(env, tmp_path, f"{repo}:signed", "signed")
    sign(env, key, f"{repo}:signed")
    pushed(env, tmp_path, f"{repo}:unsigned", "unsigned")
    trust = ("--trust-key", f"{key}.pub")

    ran = cli(env, "run", *trust, "--json", f"oci://{repo}:signed")
    assert ran.returncode == 7, ran.stderr
    result = json.loads(ran.stdout)
    assert result["module"] == f"{repo}:signed@{digest}"  # named by reference and digest

    refused = cli(env, "run", *trust, f"oci://{repo}:unsigned")
    assert refused.returncode == 126
    assert "has no signatures" in refused.stderr and "denied" in refused.stderr

    other = tmp_path / "other.key"
    assert cli(env, "keygen", "--cosign", str(other)).returncode == 0
    refused = cli(env, "run", "--trust-key", f"{other}.pub", f"oci://{repo}:signed")
    assert refused.returncode == 126
    assert "no valid signature by a trusted key" in refused.stderr

    # The tag moved to an unsigned image: what the tag means now is what is checked.
    moved = pushed(env, tmp_path, f"{repo}:signed", "moved")
    refreshed = cli(env, "oci", "pull", f"{repo}:signed")
    assert refreshed.returncode == 0 and moved in refreshed.stdout
    refused = cli(env, "run", *trust, f"oci://{repo}:signed")
    assert refused.returncode == 126 and f"image {moved} has no signatures" in refused.stderr


def test_embedded_signature_counts_unless_the_policy_requires_an_image_signature(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    assert cli(env, "keygen", str(tmp_path / "module.key")).returncode == 0
    source = unique_module(tmp_path, "embedded")
    signed_module = tmp_path / "signed.wasm"
    done = cli(env, "sign", "--key", str(tmp_path / "module.key"), str(source), "-o",
               str(signed_module))
    assert done.returncode == 0, done.stderr
    ref = f"{registry.host}/embedded-{os.urandom(4).hex()}:1"
    built = cli(env, "oci", "build", str(signed_module), "--tag", ref)
    assert built.returncode == 0 and cli(env, "oci", "push", ref).returncode == 0

    keys = f'keys = ["{tmp_path / "module.key.pub"}", "{key}.pub"]'
    either = tmp_path / "either.toml"
    either.write_text(f"[trust]\nrequire_signature = true\n{keys}\n")
    ran = cli(env, "run", "--policy", str(either), f"oci://{ref}")
    assert ran.returncode == 7, ran.stderr

    image_only = tmp_path / "image.toml"
    image_only.write_text(f"[trust]\nrequire_image_signature = true\n{keys}\n")
    refused = cli(env, "run", "--policy", str(image_only), f"oci://{ref}")
    assert refused.returncode == 126
    assert "image signatures required" in refused.stderr
    sign(env, key, ref)
    assert cli(env, "run", "--policy", str(image_only), f"oci://{ref}").returncode == 7
    # A plain file has no image: under require_image_signature it never runs.
    refused = cli(env, "run", "--policy", str(image_only), str(signed_module))
    assert refused.returncode == 126


MANIFEST = """
[trust]
require_signature = true
keys = ["{key}.pub"]

[[function]]
name = "signed"
route = "/signed"
module = "oci://{repo}:signed"

[[function]]
name = "unsigned"
route = "/unsigned"
module = "oci://{repo}:unsigned"

[[function]]
name = "moving"
route = "/moving"
module = "oci://{repo}:moving"
isolate = "process"   # a confined pool worker: the vouched digest travels with the spec
"""


def image_of(env: dict[str, str], function: str, ref: str) -> str:
    built = cli(env, "oci", "build", str(FUNCTIONS / f"{function}.wasm"), "--tag", ref, "--json")
    assert built.returncode == 0, built.stderr
    assert cli(env, "oci", "push", ref).returncode == 0
    return str(json.loads(built.stdout)["digest"])


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.usefixtures("shared_config")
def test_gateway_pins_images_in_its_lock_checks_signatures_and_re_resolves_on_sighup(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    repo = f"{registry.host}/fn-{os.urandom(4).hex()}"
    image_of(env, "hello", f"{repo}:signed")
    sign(env, key, f"{repo}:signed")
    image_of(env, "status", f"{repo}:unsigned")  # other bytes than any signed image
    first = image_of(env, "hello", f"{repo}:moving")
    sign(env, key, f"{repo}:moving")
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(MANIFEST.format(key=key, repo=repo))
    gateway_environment = gateway_env(tmp_path / "gwcache", tmp_path / "state")
    gateway_environment["STOCKADE_INSECURE_REGISTRIES"] = registry.host

    gateway = Gateway(manifest, gateway_environment, ())
    try:
        assert gateway.client.get("/signed").status_code == 200
        assert gateway.client.get("/unsigned").status_code == 403
        hello = gateway.client.get("/moving")
        assert hello.status_code == 200
        lock = json.loads((tmp_path / "stockade.lock").read_text())
        assert lock["images"][f"oci://{repo}:moving"]["digest"] == first
        assert set(lock["images"]) == {f"oci://{repo}:{t}" for t in
                                       ("signed", "unsigned", "moving")}

        second = image_of(env, "echo", f"{repo}:moving")  # the tag moves
        sign(env, key, f"{repo}:moving")
        gateway.stop()
        # A restart runs the locked digest, whatever the tag means now.
        gateway = Gateway(manifest, gateway_environment, ())
        assert gateway.client.get("/moving").text == hello.text
        gateway.signal(signal.SIGHUP)
        wait_for(lambda: json.loads((tmp_path / "stockade.lock").read_text())
                 ["images"][f"oci://{repo}:moving"]["digest"] == second)
        wait_for(lambda: gateway.client.get("/moving").text != hello.text)
        assert gateway.client.get("/unsigned").status_code == 403
        echoed = gateway.client.get("/moving").text

        # The tag moves to an image nobody signed: a reload keeps serving the signed one.
        third = image_of(env, "status", f"{repo}:moving")
        gateway.signal(signal.SIGHUP)
        gateway.wait_for_log(f"oci://{repo}:moving now names {third}, which this "
                             f"function's trust refuses; still serving {second}")
        moving = gateway.client.get("/moving")
        assert moving.status_code == 200 and moving.text == echoed
        lock = json.loads((tmp_path / "stockade.lock").read_text())
        assert lock["images"][f"oci://{repo}:moving"]["digest"] == second
    finally:
        gateway.stop()

"""Images behind an OCI index (a multi-platform tag) under signatures: `oci sign` signs the
digest a reference resolves to (the index), as cosign does, and a signature counts over
the platform manifest that runs or over the index it was reached through: `run` under
trust and `oci verify` agree on both."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .fixtures import Registry, cli
from .test_signatures import Api, env, key, pushed  # noqa: F401  (fixtures)

__all__ = ["env", "key"]

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def indexed(registry: Registry, env: dict[str, str], tmp_path: Path,
            marker: str) -> tuple[str, str, str]:
    """(repository, platform manifest digest, index digest): a pushed Wasm image and an
    index tagged `multi` listing it as the wasip1/wasm entry."""
    name = f"multi-{marker}-{os.urandom(4).hex()}"
    repo = f"{registry.host}/{name}"
    child = pushed(env, tmp_path, f"{repo}:single", marker)
    api = Api(registry, name)
    body = api.manifest(child)
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "digest": child, "size": len(body),
         "platform": {"os": "wasip1", "architecture": "wasm"}}]}).encode()
    api.put_manifest("multi", index, INDEX)
    return repo, child, "sha256:" + hashlib.sha256(index).hexdigest()


def run(env: dict[str, str], key: Path, ref: str) -> tuple[int, str]:
    done = cli(env, "run", "--trust-key", f"{key}.pub", "--require-signature", f"oci://{ref}")
    return done.returncode, done.stderr


def verify(env: dict[str, str], key: Path, ref: str) -> tuple[int, dict[str, object], str]:
    done = cli(env, "oci", "verify", "--key", f"{key}.pub", "--json", ref)
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def test_a_signed_index_lets_its_wasm_manifest_run(registry: Registry, tmp_path: Path,
                                                   env: dict[str, str], key: Path) -> None:
    """`oci sign REPO:multi` signs the index; `run` checked only the manifest chosen from
    it, and refused the image `oci verify` accepted."""
    repo, child, index = indexed(registry, env, tmp_path, "index")
    signed = cli(env, "oci", "sign", "--key", str(key), "--json", f"{repo}:multi")
    assert signed.returncode == 0 and json.loads(signed.stdout)["digest"] == index
    code, stderr = run(env, key, f"{repo}:multi")
    assert code == 7, stderr
    code, stderr = run(env, key, f"{repo}@{index}")  # pinned to the index
    assert code == 7, stderr
    code, report, stderr = verify(env, key, f"{repo}:multi")
    assert code == 0, stderr
    assert report["digest"] == child and report["index"] == index
    assert {v["digest"] for v in report["verified_by"]} == {index}  # type: ignore[union-attr]
    # The manifest alone, not reached through the index, carries no signature.
    assert run(env, key, f"{repo}@{child}")[0] == 126
    assert verify(env, key, f"{repo}@{child}")[0] == 126


def test_a_signed_manifest_verifies_through_its_index(registry: Registry, tmp_path: Path,
                                                      env: dict[str, str], key: Path) -> None:
    """Signed as the manifest that runs: `run` accepted it, `oci verify` of the index tag
    refused it."""
    repo, child, index = indexed(registry, env, tmp_path, "child")
    assert cli(env, "oci", "sign", "--key", str(key), f"{repo}@{child}").returncode == 0
    code, stderr = run(env, key, f"{repo}:multi")
    assert code == 7, stderr
    code, report, stderr = verify(env, key, f"{repo}:multi")
    assert code == 0, stderr
    assert report["digest"] == child and report["index"] == index
    assert {v["digest"] for v in report["verified_by"]} == {child}  # type: ignore[union-attr]
    text = cli(env, "oci", "verify", "--key", f"{key}.pub", f"{repo}:multi")
    assert text.returncode == 0 and f"image {child}" in text.stdout


def test_an_unsigned_index_is_refused_by_both(registry: Registry, tmp_path: Path,
                                             env: dict[str, str], key: Path) -> None:
    repo, child, index = indexed(registry, env, tmp_path, "none")
    code, stderr = run(env, key, f"{repo}:multi")
    assert code == 126 and f"image {child} (index {index}) has no signatures" in stderr
    code, report, stderr = verify(env, key, f"{repo}:multi")
    assert code == 126 and f"image {child} (index {index}) has no signatures" in stderr
    assert report["verified"] is False

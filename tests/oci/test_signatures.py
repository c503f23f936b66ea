"""`stockade oci sign/verify` against a real docker-registry: cosign's exact layout checked
by `openssl dgst`, the Sigstore bundle by npm's @sigstore/verify, cosign's encrypted key
file round-tripped, and forged, swapped, truncated, oversized and re-pointed signatures
refused."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fixtures import ROOT, Registry, cli, require, stockade_env
from .test_registry import unique_module

PASSWORD = "correct horse"
SIGSTORE_NPM = ("@sigstore/verify@3.1.1", "@sigstore/bundle@4.0.0")


@pytest.fixture(scope="session")
def sigstore_js() -> Path:
    """npm's @sigstore/verify, installed once into build/ from the npm registry."""
    require("node")
    npm = require("npm")
    prefix = ROOT / "build" / "node-sigstore"
    modules = prefix / "node_modules"
    if not (modules / "@sigstore" / "verify" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                               str(prefix), *SIGSTORE_NPM], capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            pytest.fail(f"npm install {' '.join(SIGSTORE_NPM)} failed: {done.stderr[-2000:]}")
    return modules


@pytest.fixture
def env(tmp_path: Path, registry: Registry) -> dict[str, str]:
    environment = stockade_env(tmp_path / "cache", tmp_path / "state", registry)
    environment["COSIGN_PASSWORD"] = PASSWORD
    return environment


@pytest.fixture
def key(tmp_path: Path, env: dict[str, str]) -> Path:
    made = cli(env, "keygen", "--cosign", str(tmp_path / "cosign.key"))
    assert made.returncode == 0, made.stderr
    return tmp_path / "cosign.key"


def pushed(env: dict[str, str], tmp_path: Path, ref: str, marker: str,
           fmt: str = "artifact") -> str:
    """Build a fresh module into `ref`, push it, return the manifest digest."""
    built = cli(env, "oci", "build", str(unique_module(tmp_path, marker)), "--tag", ref,
                "--format", fmt, "--json")
    assert built.returncode == 0, built.stderr
    push = cli(env, "oci", "push", ref)
    assert push.returncode == 0, push.stderr
    return str(json.loads(built.stdout)["digest"])


class Api:
    """Plain HTTP against the registry, to read and forge what Stockade wrote."""

    def __init__(self, registry: Registry, repo: str) -> None:
        self.base = f"http://{registry.host}/v2/{repo}"

    def manifest(self, selector: str) -> bytes:
        response = httpx.get(f"{self.base}/manifests/{selector}", headers={"Accept": ", ".join(
            ("application/vnd.oci.image.manifest.v1+json",
             "application/vnd.oci.image.index.v1+json"))})
        response.raise_for_status()
        return response.content

    def blob(self, digest: str) -> bytes:
        response = httpx.get(f"{self.base}/blobs/{digest}", follow_redirects=True)
        response.raise_for_status()
        return response.content

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = httpx.post(f"{self.base}/blobs/uploads/")
        location = start.headers["location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        separator = "&" if "?" in location else "?"
        httpx.put(f"{location}{separator}digest={digest}", content=data).raise_for_status()
        return digest

    def put_manifest(self, tag: str, document: dict[str, Any] | bytes,
                     media_type: str = "application/vnd.oci.image.manifest.v1+json") -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        httpx.put(f"{self.base}/manifests/{tag}", content=body,
                  headers={"Content-Type": media_type}).raise_for_status()


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


@pytest.fixture
def signed(registry: Registry, tmp_path: Path, env: dict[str, str],
           key: Path) -> Iterator[tuple[str, str, Api]]:
    """(ref, digest, api) of a pushed image signed with `key`."""
    repo = f"signed-{os.urandom(4).hex()}"
    ref = f"{registry.host}/{repo}:1"
    digest = pushed(env, tmp_path, ref, "signed")
    done = cli(env, "oci", "sign", "--key", str(key), ref)
    assert done.returncode == 0, done.stderr
    yield ref, digest, Api(registry, repo)


def verify(env: dict[str, str], key: Path, ref: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "oci", "verify", "--key", f"{key}.pub", ref, "--json")


# -- cosign's key file ---------------------------------------------------------------------


def test_cosign_key_file_has_cosigns_format_and_round_trips(key: Path, tmp_path: Path) -> None:
    from stockade.trust.cosignkeys import load_cosign_key

    text = key.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    document = json.loads(base64.b64decode("".join(text.strip().splitlines()[1:-1])))
    assert document["kdf"]["name"] == "scrypt"
    assert document["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(document["kdf"]["salt"])) == 32
    assert document["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(document["cipher"]["nonce"])) == 24
    # Decrypted, it is a PKCS#8 P-256 key whose public half openssl derives as cosign.pub.
    secret = load_cosign_key(key, PASSWORD.encode())
    from cryptography.hazmat.primitives import serialization

    pem = secret.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    (tmp_path / "plain.pem").write_bytes(pem)
    derived = subprocess.run([require("openssl"), "pkey", "-in", str(tmp_path / "plain.pem"),
                              "-pubout"], capture_output=True, check=True).stdout
    assert derived == Path(f"{key}.pub").read_bytes()


def test_wrong_password_and_hostile_key_files_refused(key: Path, tmp_path: Path,
                                                      env: dict[str, str],
                                                      registry: Registry) -> None:
    ref = f"{registry.host}/pw-{os.urandom(4).hex()}:1"
    pushed(env, tmp_path, ref, "pw")
    wrong = cli({**env, "COSIGN_PASSWORD": "nope"}, "oci", "sign", "--key", str(key), ref)
    assert wrong.returncode == 125
    assert "wrong password" in wrong.stderr and "Traceback" not in wrong.stderr
    # scrypt parameters that would cost gigabytes are refused before any work.
    text = key.read_text().strip().splitlines()
    document = json.loads(base64.b64decode("".join(text[1:-1])))
    document["kdf"]["params"]["N"] = 2**30
    hostile = tmp_path / "hostile.key"
    hostile.write_text(text[0] + "\n" + base64.b64encode(json.dumps(document).encode()).decode()
                       + "\n" + text[-1] + "\n")
    refused = cli(env, "oci", "sign", "--key", str(hostile), ref, timeout=20)
    assert refused.returncode == 125 and "scrypt parameters" in refused.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(os.urandom(300))
    refused = cli(env, "oci", "sign", "--key", str(garbage), ref)
    assert refused.returncode == 125 and "not a cosign key file" in refused.stderr
    no_password = {k: v for k, v in env.items() if k != "COSIGN_PASSWORD"}
    refused = cli(no_password, "oci", "sign", "--key", str(key), ref)
    assert refused.returncode == 125 and "COSIGN_PASSWORD" in refused.stderr


# -- interoperability ----------------------------------------------------------------------


def test_inspect_says_signatures_are_unknown_when_the_registry_was_not_asked(
        signed: tuple[str, str, Api], env: dict[str, str]) -> None:
    """Not named insecure (so spoken to over HTTPS, which it does not speak), the registry
    could not list tags: inspect said `none found` from the local tags, exit 0."""
    ref, digest, _ = signed
    asked = cli(env, "oci", "inspect", ref, "--json")
    assert asked.returncode == 0, asked.stderr
    report = json.loads(asked.stdout)
    assert sig_tag(digest) in report["signatures"] and report["signatures_unknown"] is None
    unlisted = {k: v for k, v in env.items() if k != "STOCKADE_INSECURE_REGISTRIES"}
    text = cli(unlisted, "oci", "inspect", ref)
    assert text.returncode == 0, text.stderr
    [row] = [line for line in text.stdout.splitlines() if line.startswith("signatures")]
    assert "unknown (registry unreachable: cannot reach registry" in row, row
    assert "none found" not in text.stdout
    as_json = cli(unlisted, "oci", "inspect", ref, "--json")
    report = json.loads(as_json.stdout)
    assert report["signatures"] is None, report
    assert report["signatures_unknown"].startswith("registry unreachable: "), report


def test_sig_manifest_has_cosigns_shape_and_openssl_verifies(
        signed: tuple[str, str, Api], key: Path, tmp_path: Path) -> None:
    ref, digest, api = signed
    raw = api.manifest(sig_tag(digest))
    manifest = json.loads(raw)
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(api.blob(manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": [manifest["layers"][0]["digest"]]}
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert list(layer["annotations"]) == ["dev.cosignproject.cosign/signature"]
    payload = api.blob(layer["digest"])
    repo = ref.rsplit(":", 1)[0]
    assert json.loads(payload) == {
        "critical": {"identity": {"docker-reference": repo},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None}
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(
        base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    checked = subprocess.run([require("openssl"), "dgst", "-sha256", "-verify", f"{key}.pub",
                              "-signature", str(tmp_path / "sig.der"), str(tmp_path / "payload")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "Verified OK" in checked.stdout
    (tmp_path / "payload").write_bytes(payload.replace(b"cosign container", b"cosign kontainer"))
    tampered = subprocess.run([require("openssl"), "dgst", "-sha256", "-verify", f"{key}.pub",
                               "-signature", str(tmp_path / "sig.der"),
                               str(tmp_path / "payload")], capture_output=True, check=False)
    assert tampered.returncode != 0


def bundle_of(api: Api, digest: str) -> tuple[dict[str, Any], bytes]:
    """(the referrer artifact manifest, the bundle bytes) through the fallback tag."""
    index = json.loads(api.manifest(digest.replace(":", "-")))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    artifact = json.loads(api.manifest(entry["digest"]))
    assert artifact["subject"]["digest"] == digest
    return artifact, api.blob(artifact["layers"][0]["digest"])


def test_bundle_referrer_verifies_with_sigstore_js(signed: tuple[str, str, Api], key: Path,
                                                   tmp_path: Path, sigstore_js: Path) -> None:
    ref, digest, api = signed
    artifact, bundle = bundle_of(api, digest)
    assert artifact["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert json.loads(bundle)["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    (tmp_path / "bundle.json").write_bytes(bundle)
    image = api.manifest(digest)
    assert "sha256:" + hashlib.sha256(image).hexdigest() == digest
    (tmp_path / "image.json").write_bytes(image)
    (tmp_path / "other.json").write_bytes(image + b" ")
    script = Path(__file__).with_name("sigstore_verify.cjs")

    def node(artifact_file: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([require("node"), str(script), str(tmp_path / "bundle.json"),
                               str(tmp_path / artifact_file), f"{key}.pub"],
                              env={**os.environ, "NODE_PATH": str(sigstore_js)},
                              capture_output=True, text=True, timeout=60, check=False)

    good = node("image.json")
    assert good.returncode == 0 and good.stdout.strip() == "verified", good.stdout + good.stderr
    bad = node("other.json")
    assert bad.returncode == 1 and "refused" in bad.stdout


def test_verify_accepts_the_signer_and_refuses_other_keys(
        signed: tuple[str, str, Api], key: Path, env: dict[str, str], tmp_path: Path) -> None:
    ref, digest, _ = signed
    ok = verify(env, key, ref)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["digest"] == digest
    assert {v["kind"] for v in report["verified_by"]} == {"cosign", "bundle"}
    other = tmp_path / "other.key"
    assert cli(env, "keygen", "--cosign", str(other)).returncode == 0
    refused = verify(env, other, ref)
    assert refused.returncode == 126
    assert "no valid signature by a trusted key" in refused.stderr
    assert "Traceback" not in refused.stderr
    # An Ed25519 module key is not an image key: a usage error, not a silent pass.
    assert cli(env, "keygen", str(tmp_path / "ed")).returncode == 0
    wrong_kind = cli(env, "oci", "verify", "--key", str(tmp_path / "ed.pub"), ref)
    assert wrong_kind.returncode == 125 and "not a cosign public key" in wrong_kind.stderr


def test_a_second_signer_appends_as_cosign_does(signed: tuple[str, str, Api], key: Path,
                                                env: dict[str, str], tmp_path: Path) -> None:
    ref, digest, api = signed
    second = tmp_path / "second.key"
    assert cli(env, "keygen", "--cosign", str(second)).returncode == 0
    assert cli(env, "oci", "sign", "--key", str(second), ref).returncode == 0
    assert len(json.loads(api.manifest(sig_tag(digest)))["layers"]) == 2
    assert verify(env, key, ref).returncode == 0
    assert verify(env, second, ref).returncode == 0


# -- attacks -------------------------------------------------------------------------------


def test_signature_of_another_image_copied_over_is_refused(
        signed: tuple[str, str, Api], key: Path, env: dict[str, str], tmp_path: Path,
        registry: Registry) -> None:
    ref, digest, api = signed
    repo = ref.rsplit(":", 1)[0]
    victim = f"{repo}:2"
    victim_digest = pushed(env, tmp_path, victim, "victim")
    # Both the cosign tag and the referrers tag of the signed image, put on the other.
    api.put_manifest(sig_tag(victim_digest), api.manifest(sig_tag(digest)))
    api.put_manifest(victim_digest.replace(":", "-"), api.manifest(digest.replace(":", "-")),
                     "application/vnd.oci.image.index.v1+json")
    refused = verify(env, key, victim)
    assert refused.returncode == 126
    assert f"payload signs {digest}, not {victim_digest}" in refused.stderr
    assert "about another image" in refused.stderr


def test_swapped_payload_is_refused(signed: tuple[str, str, Api], key: Path,
                                    env: dict[str, str], tmp_path: Path) -> None:
    ref, digest, api = signed
    repo = ref.rsplit(":", 1)[0]
    victim = f"{repo}:swap"
    victim_digest = pushed(env, tmp_path, victim, "swap")
    manifest = json.loads(api.manifest(sig_tag(digest)))
    payload = json.loads(api.blob(manifest["layers"][0]["digest"]))
    payload["critical"]["image"]["docker-manifest-digest"] = victim_digest
    data = json.dumps(payload, separators=(",", ":")).encode()
    manifest["layers"][0].update(digest=api.put_blob(data), size=len(data))
    api.put_manifest(sig_tag(victim_digest), manifest)
    refused = verify(env, key, victim)
    assert refused.returncode == 126
    assert "cosign: no trusted key verifies the signature" in refused.stderr


@pytest.mark.parametrize("annotation", ["", "!!!not base64!!!", "MEUCIQ", "A" * 100_000])
def test_garbage_and_truncated_signatures_are_refused(signed: tuple[str, str, Api], key: Path,
                                                      env: dict[str, str],
                                                      annotation: str) -> None:
    ref, digest, api = signed
    manifest = json.loads(api.manifest(sig_tag(digest)))
    manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = annotation
    api.put_manifest(sig_tag(digest), manifest)
    # The bundle still verifies; take it away to see the cosign refusal alone.
    api.put_manifest(digest.replace(":", "-"), {"schemaVersion": 2, "manifests": [],
                                                "mediaType": "application/vnd.oci.image."
                                                             "index.v1+json"},
                     "application/vnd.oci.image.index.v1+json")
    refused = verify(env, key, ref)
    assert refused.returncode == 126, refused.stdout
    assert "cosign:" in refused.stderr and "Traceback" not in refused.stderr


def test_oversized_and_lying_payloads_are_refused_bounded(
        signed: tuple[str, str, Api], key: Path, env: dict[str, str]) -> None:
    ref, digest, api = signed
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    big_digest = api.put_blob(big)
    manifest = json.loads(api.manifest(sig_tag(digest)))
    honest = dict(manifest["layers"][0], digest=big_digest, size=len(big))
    lying = dict(manifest["layers"][0], digest=big_digest, size=100)
    manifest["layers"] = [honest, lying]
    api.put_manifest(sig_tag(digest), manifest)
    api.put_manifest(digest.replace(":", "-"), {"schemaVersion": 2, "manifests": [],
                                                "mediaType": "application/vnd.oci.image."
                                                             "index.v1+json"},
                     "application/vnd.oci.image.index.v1+json")
    refused = verify(env, key, ref)
    assert refused.returncode == 126
    assert f"declares {len(big)} bytes" in refused.stderr
    assert "larger than 65536 bytes" in refused.stderr


def test_tag_moved_to_another_image_is_refused(signed: tuple[str, str, Api], key: Path,
                                               env: dict[str, str], tmp_path: Path) -> None:
    ref, digest, _ = signed
    moved = pushed(env, tmp_path, ref, "moved")  # same tag, unsigned image
    assert moved != digest
    refused = verify(env, key, ref)
    assert refused.returncode == 126
    assert f"image {moved} has no signatures" in refused.stderr
    # Pinned to the signed digest, the old image still verifies.
    pinned = ref.rsplit(":", 1)[0] + "@" + digest
    assert verify(env, key, pinned).returncode == 0


def test_a_signature_tag_that_is_not_a_signature_manifest_is_refused(
        signed: tuple[str, str, Api], key: Path, env: dict[str, str]) -> None:
    ref, digest, api = signed
    # An index where cosign's manifest should be, and a referrers tag whose "bundle" is
    # the image's own manifest (no subject, no bundle layer).
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": []}
    api.put_manifest(sig_tag(digest), index, "application/vnd.oci.image.index.v1+json")
    api.put_manifest(digest.replace(":", "-"), dict(index, manifests=[
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
         "size": len(api.manifest(digest)),
         "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]),
        "application/vnd.oci.image.index.v1+json")
    refused = verify(env, key, ref)
    assert refused.returncode == 126
    assert "has no layers" in refused.stderr
    assert f"referrer {digest[:19]} is about another image" in refused.stderr


def test_unpushed_image_and_unknown_registry(key: Path, env: dict[str, str],
                                             registry: Registry) -> None:
    missing = cli(env, "oci", "sign", "--key", str(key), f"{registry.host}/nothing-here:1")
    assert missing.returncode == 127 and "not found" in missing.stderr
    unknown = cli(env, "oci", "verify", "--key", f"{key}.pub", "registry.invalid/app:1")
    assert unknown.returncode == 69 and "cannot reach registry" in unknown.stderr

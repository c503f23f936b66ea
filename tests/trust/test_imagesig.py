"""Image signatures keep their two domains apart: a cosign simple-signing payload is exactly
what cosign writes (and names this repository), never an image manifest; a Sigstore bundle
counts only over an image manifest or index, never over a simple-signing payload. Signed
with the project's own signing code; the payloads as cosign writes them still verify."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from stockade.trust import imagesig
from stockade.trust.cosignkeys import CosignSecret
from stockade.trust.imagesig import SIGNATURE_TYPE, bundle, check_bundle, check_payload, payload

SECRET = CosignSecret(ec.derive_private_key(0x5EC12E7, ec.SECP256R1()))
KEYS = [SECRET.public]
REPO = "127.0.0.1:5000/app"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signed(data: bytes) -> str:
    return base64.b64encode(SECRET.sign(data)).decode()


def cosign_payload(reference: str, digest: str, optional: Any = None) -> bytes:
    """A payload byte for byte as cosign's Go code marshals it (struct order, no spaces)."""
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": SIGNATURE_TYPE},
                       "optional": optional}, separators=(",", ":")).encode()


def manifest_naming(target: str) -> bytes:
    """An OCI manifest that also carries a top-level `critical` naming `target`: still a
    valid manifest to every registry and runtime."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                   "digest": digest_of(b"{}")},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 2,
                    "digest": digest_of(b"{}")}],
        "critical": {"identity": {"docker-reference": REPO},
                     "image": {"docker-manifest-digest": target},
                     "type": SIGNATURE_TYPE}}, separators=(",", ":")).encode()


# -- legitimate signatures -------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "repository", "optional"), [
    (REPO, REPO, None),  # `cosign sign --key` of a local registry's image
    (REPO, REPO, {"creator": "ci", "build": "42"}),  # with `-a key=value` annotations
    ("index.docker.io/library/nginx", "docker.io/library/nginx", None),  # Docker Hub's name
    ("docker.io/acme/app:1.0", "docker.io/acme/app", None),  # a tagged identity (Podman)
    (f"{REPO}@{DIGEST}", REPO, None),
])
def test_payloads_as_cosign_writes_them_verify(reference: str, repository: str,
                                               optional: Any) -> None:
    data = cosign_payload(reference, DIGEST, optional)
    key, reason = check_payload(data, signed(data), DIGEST, KEYS, repository)
    assert key == SECRET.public, reason


def test_the_projects_own_payload_verifies() -> None:
    data = payload(REPO, DIGEST)
    assert data == cosign_payload(REPO, DIGEST)
    assert check_payload(data, signed(data), DIGEST, KEYS, REPO)[0] == SECRET.public
    assert check_payload(data, signed(data), DIGEST, KEYS)[0] == SECRET.public  # no repository


def test_the_projects_own_bundle_verifies_over_a_manifest() -> None:
    image = manifest_naming(OTHER).replace(b',"critical"', b',"annotations"')
    assert check_bundle(bundle(SECRET, image, digest_of(image)), digest_of(image),
                        KEYS)[0] == SECRET.public
    assert imagesig.image_document_refusal(json.loads(image)) is None


# -- a manifest's signature is not a payload's ------------------------------------------------


def test_a_signed_manifest_naming_another_image_is_not_a_payload() -> None:
    # The signer signs this manifest as an image (its bundle); the same key, the same
    # primitive: its signature is also one over these bytes taken as a payload.
    manifest = manifest_naming(OTHER)
    sigstore = json.loads(bundle(SECRET, manifest, digest_of(manifest)))
    signature = sigstore["messageSignature"]["signature"]
    key, reason = check_payload(manifest, signature, OTHER, KEYS)
    assert key is None
    assert "schemaVersion" in reason and "manifest" in reason


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d.update(schemaVersion=2), "schemaVersion"),
    (lambda d: d.update(mediaType="application/vnd.oci.image.manifest.v1+json"), "mediaType"),
    (lambda d: d.update(layers=[]), "layers"),
    (lambda d: d.update(manifests=[]), "manifests"),
    (lambda d: d.update(config={}), "config"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["critical"].update(extra=1), "extra"),
    (lambda d: d["critical"].pop("identity"), "identity"),
    (lambda d: d["critical"].update(identity="x"), "identity"),
    (lambda d: d["critical"]["identity"].update(extra=1), "identity"),
    (lambda d: d["critical"]["image"].update(extra=1), "image"),
    (lambda d: d["critical"].update(type="cosign container image signature "), "type"),
    (lambda d: d.update(optional=[1]), "optional"),
    (lambda d: d.pop("critical"), "critical"),
])
def test_only_a_simple_signing_document_is_a_payload(change: Any, named: str) -> None:
    document = json.loads(cosign_payload(REPO, DIGEST))
    change(document)
    data = json.dumps(document).encode()
    key, reason = check_payload(data, signed(data), DIGEST, KEYS, REPO)
    assert key is None and named in reason, reason


@pytest.mark.parametrize("reference", [
    "127.0.0.1:5000/other", "127.0.0.1:5001/app", "127.0.0.1:5000/app/sub", "x", "",
    "docker.io/library/app",
])
def test_a_payload_for_another_repository_is_refused(reference: str) -> None:
    data = cosign_payload(reference, DIGEST)
    key, reason = check_payload(data, signed(data), DIGEST, KEYS, REPO)
    assert key is None and "docker-reference" in reason, reason


# -- a payload's signature is not a manifest's ------------------------------------------------


def test_a_simple_signing_payload_is_not_an_image_document() -> None:
    data = payload(REPO, DIGEST)
    reason = imagesig.image_document_refusal(json.loads(data))
    assert reason is not None and "simple-signing" in reason
    # Signed as a payload, it would pass as a bundle over its own digest: the document a
    # bundle signs must be an image manifest or index for the bundle to count.
    forged = json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": SECRET.public.hint}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256",
                              "digest": base64.b64encode(hashlib.sha256(data).digest()).decode()},
            "signature": signed(data)}}).encode()
    assert check_bundle(forged, digest_of(data), KEYS)[0] == SECRET.public


@pytest.mark.parametrize("document", [
    {"critical": {}, "schemaVersion": 2, "layers": []},
    {"layers": [], "config": {}},
    {"schemaVersion": 1, "layers": []},
    {"schemaVersion": True, "layers": []},
    [],
])
def test_what_is_not_an_image_document(document: Any) -> None:
    assert imagesig.image_document_refusal(document) is not None

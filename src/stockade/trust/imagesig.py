"""Image signatures as cosign and Sigstore write them, without the registry.

- cosign's simple-signing payload: `{"critical":{"identity":{"docker-reference":REPO},
  "image":{"docker-manifest-digest":DIGEST},"type":"cosign container image signature"},
  "optional":null}`, signed with ECDSA-P256-SHA256; the base64 DER signature travels in
  the layer annotation `dev.cosignproject.cosign/signature`.
- The Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`) of a key-based
  signature: a `messageSignature` whose message is the image manifest itself (its digest
  is the image digest), the signer named by a public-key hint, no transparency log entry.

Both sign with the same key and the same primitive, so their domains are kept apart by
what is signed: a payload is exactly cosign's simple-signing document (top-level keys
`critical` and `optional` only, `critical` exactly `identity`, `image` and `type`, as
containers/image reads it), which no image manifest or index can be (they carry
`schemaVersion`); a bundle counts only over an image manifest or index
(`image_document_refusal`), never over a simple-signing document. Without that, a
manifest signed as an image, carrying a top-level `critical` that names another image,
was that other image's payload signature (found by review).

Every check here is on bytes already bounded by the caller; nothing raises for bad input:
`check_payload`, `check_bundle` and `image_document_refusal` return the reason they refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from .cosignkeys import CosignSecret, ImageKey

__all__ = ["PAYLOAD_TYPE", "SIGNATURE_ANNOTATION", "BUNDLE_TYPE", "SIGNATURE_TYPE",
           "payload", "check_payload", "bundle", "check_bundle", "decode_signature",
           "image_document_refusal", "same_repository", "MAX_SIGNATURE_B64"]

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_TYPE = "cosign container image signature"
MAX_SIGNATURE_B64 = 512  # a DER P-256 signature is at most 72 bytes
# Top-level keys of OCI and Docker manifests and indexes: never in a payload.
MANIFEST_KEYS = ("schemaVersion", "mediaType", "config", "layers", "manifests", "subject",
                 "artifactType", "annotations")
# Docker Hub's names for itself: cosign writes `index.docker.io/...`.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def payload(repository: str, digest: str) -> bytes:
    """cosign's payload for image `digest` in `repository` (`registry/repo`), as cosign
    serialises it (Go struct order, no spaces)."""
    return json.dumps({
        "critical": {"identity": {"docker-reference": repository},
                     "image": {"docker-manifest-digest": digest},
                     "type": SIGNATURE_TYPE},
        "optional": None}, separators=(",", ":")).encode()


def decode_signature(text: object) -> bytes | None:
    """The DER bytes of a base64 signature annotation, or None when it is not one."""
    if not isinstance(text, str) or not text or len(text) > MAX_SIGNATURE_B64:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _shown(value: object, limit: int) -> str:
    """A field for a message: a string cut short, else only its JSON type (str() of a
    deeply nested list could itself exhaust the recursion limit)."""
    return value[:limit] if isinstance(value, str) else type(value).__name__


def _exactly(value: object, keys: set[str], what: str) -> str | None:
    """Why `value` is not a JSON object with exactly `keys`, or None."""
    if not isinstance(value, dict):
        return f"{what} is not a JSON object"
    extra = sorted(set(value) - keys)
    missing = sorted(keys - set(value))
    if extra or missing:
        return f"{what} has {'key' if extra else 'no key'} {_shown((extra or missing)[0], 40)}"
    return None


def _simple_signing_refusal(document: object) -> str | None:
    """Why `document` is not cosign's simple-signing payload, or None. Strict: an image
    manifest that also carries `critical` must never pass for one."""
    if not isinstance(document, dict):
        return "not a JSON object"
    manifest = [key for key in MANIFEST_KEYS if key in document]
    if manifest:
        return f"it has top-level key {manifest[0]} (a manifest's)"
    if "optional" in document and document["optional"] is not None \
            and not isinstance(document["optional"], dict):
        return "optional is not a JSON object or null"
    refused = (_exactly({k: v for k, v in document.items() if k != "optional"}, {"critical"},
                        "the document")
               or _exactly(document["critical"], {"identity", "image", "type"}, "critical"))
    if refused is not None:
        return refused
    critical = document["critical"]
    return (_exactly(critical["identity"], {"docker-reference"}, "critical.identity")
            or _exactly(critical["image"], {"docker-manifest-digest"}, "critical.image"))


def _repository_of(reference: str) -> str:
    """The `registry/repository` a docker-reference names: its tag or digest dropped,
    Docker Hub's names for itself made one."""
    name = reference.partition("@")[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[:name.rfind(":")]
    registry, slash, path = name.partition("/")
    if slash and registry in _DOCKER_HUB:
        return f"docker.io/{path if '/' in path else 'library/' + path}"
    return name


def same_repository(reference: str, repository: str) -> bool:
    """Whether docker-reference `reference` (cosign writes `registry/repository`; others
    add a tag or a digest) names `repository` (`registry/repository`)."""
    return bool(reference) and _repository_of(reference) == _repository_of(repository)


def check_payload(data: bytes, signature_b64: object, digest: str,
                  keys: Sequence[ImageKey], repository: str | None = None,
                  ) -> tuple[ImageKey | None, str]:
    """(the trusted key whose signature over `data` is valid and whose payload names
    `digest`, and `repository` (`registry/repository`) when given, or None; the reason
    when None). `data` must be exactly a simple-signing document, never a manifest."""
    signature = decode_signature(signature_b64)
    if signature is None:
        return None, "signature annotation missing or not base64"
    try:
        document = json.loads(data)
        shape = _simple_signing_refusal(document)
    except (ValueError, RecursionError):  # too deep is not one either
        shape = "not JSON"
    if shape is not None:
        return None, f"payload is not a cosign simple-signing document: {shape}"
    critical = document["critical"]
    named = critical["image"]["docker-manifest-digest"]
    reference = critical["identity"]["docker-reference"]
    if critical["type"] != SIGNATURE_TYPE:
        return None, f"payload type {_shown(critical['type'], 80)!r}"
    if named != digest:
        return None, f"payload signs {_shown(named, 80)}, not {digest}"
    if not isinstance(reference, str):
        return None, "payload docker-reference is not a string"
    if repository is not None and not same_repository(reference, repository):
        return None, (f"payload docker-reference {_shown(reference, 200)} is not "
                      f"{repository}")
    for key in keys:
        if key.verify(signature, data):
            return key, ""
    return None, "no trusted key verifies the signature"


def image_document_refusal(document: object) -> str | None:
    """Why parsed `document` is not an image manifest or index a bundle may sign (a
    simple-signing payload signed by the same key is not one), or None."""
    if not isinstance(document, dict):
        return "the image document is not a JSON object"
    if "critical" in document:
        return ("the image document has a top-level critical, a cosign simple-signing "
                "payload's key, never an image manifest's")
    version = document.get("schemaVersion")
    if type(version) is not int or version != 2:
        shown = version if type(version) is int else _shown(version, 20)
        return f"the image document has schemaVersion {shown}, not 2"
    return None


def _hex_digest(digest: str) -> bytes:
    return bytes.fromhex(digest.removeprefix("sha256:"))


def bundle(secret: CosignSecret, manifest: bytes, digest: str) -> bytes:
    """The Sigstore bundle v0.3 signing image manifest `manifest` (whose digest is
    `digest`) with `secret`."""
    return json.dumps({
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": secret.public.hint},
                                 "tlogEntries": [],
                                 "timestampVerificationData": {"rfc3161Timestamps": []}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256",
                              "digest": base64.b64encode(_hex_digest(digest)).decode()},
            "signature": base64.b64encode(secret.sign(manifest)).decode()},
    }, separators=(",", ":")).encode()


def check_bundle(data: bytes, digest: str,
                 keys: Sequence[ImageKey]) -> tuple[ImageKey | None, str]:
    """(the trusted key that signed image `digest` in this bundle, or None; the reason)."""
    try:
        document = json.loads(data)
        media_type = document["mediaType"]
        hint = document["verificationMaterial"]["publicKey"]["hint"]
        message = document["messageSignature"]
        algorithm = message["messageDigest"]["algorithm"]
        signed = base64.b64decode(message["messageDigest"]["digest"], validate=True)
        signature = decode_signature(message["signature"])
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return None, "not a key-based Sigstore bundle"
    if media_type != BUNDLE_TYPE or algorithm != "SHA2_256":
        return None, f"bundle {_shown(media_type, 80)} over {_shown(algorithm, 20)}"
    if signed != _hex_digest(digest):
        return None, f"bundle signs sha256:{signed.hex()[:64]}, not {digest}"
    if signature is None:
        return None, "bundle signature is not base64"
    for key in keys:
        if key.hint == hint and key.verify(signature, signed, prehashed=True):
            return key, ""
    return None, "no trusted key verifies the bundle"

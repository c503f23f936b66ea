"""Image signatures as cosign and Sigstore write them, without the registry.

- cosign's simple-signing payload: `{"critical":{"identity":{"docker-reference":REPO},
  "image":{"docker-manifest-digest":DIGEST},"type":"cosign container image signature"},
  "optional":null}`, signed with ECDSA-P256-SHA256; the base64 DER signature travels in
  the layer annotation `dev.cosignproject.cosign/signature`.
- The Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`) of a key-based
  signature: a `messageSignature` whose message is the image manifest itself (its digest
  is the image digest), the signer named by a public-key hint, no transparency log entry.

Every check here is on bytes already bounded by the caller; nothing raises for bad input:
`check_payload` and `check_bundle` return the reason they refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from .cosignkeys import CosignSecret, ImageKey

__all__ = ["PAYLOAD_TYPE", "SIGNATURE_ANNOTATION", "BUNDLE_TYPE", "SIGNATURE_TYPE",
           "payload", "check_payload", "bundle", "check_bundle", "decode_signature",
           "MAX_SIGNATURE_B64"]

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_TYPE = "cosign container image signature"
MAX_SIGNATURE_B64 = 512  # a DER P-256 signature is at most 72 bytes


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


def check_payload(data: bytes, signature_b64: object, digest: str,
                  keys: Sequence[ImageKey]) -> tuple[ImageKey | None, str]:
    """(the trusted key whose signature over `data` is valid and whose payload names
    `digest`, or None; the reason when None)."""
    signature = decode_signature(signature_b64)
    if signature is None:
        return None, "signature annotation missing or not base64"
    try:
        document = json.loads(data)
        critical = document["critical"]
        named = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError, RecursionError):  # too deep is not one either
        return None, "payload is not a cosign simple-signing document"
    if kind != SIGNATURE_TYPE:
        return None, f"payload type {_shown(kind, 80)!r}"
    if named != digest:
        return None, f"payload signs {_shown(named, 80)}, not {digest}"
    for key in keys:
        if key.verify(signature, data):
            return key, ""
    return None, "no trusted key verifies the signature"


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

"""Image signatures in a registry: cosign's `.sig` tag and a Sigstore bundle referrer.

`sign_image` signs the manifest digest a reference resolves to in its registry, twice:
- cosign's key-based layout: tag `sha256-HEX.sig` in the same repository, an OCI manifest
  whose layers are simple-signing payloads annotated with their signature (a new
  signature is appended to the ones already there, as cosign does);
- a Sigstore bundle v0.3 in an OCI 1.1 artifact manifest whose `subject` is the image;
  registries without the referrers API (Debian's distribution 2.8) get the fallback
  tag `sha256-HEX`, an image index listing the referrers.

`verify_image` reads both back and counts a signature when a trusted key verifies it over
exactly that digest. The two share a key and a primitive, so each stays in its domain
(`imagesig`): a cosign payload must be a simple-signing document naming this repository,
never a manifest; a bundle counts only when the document it signs is an image manifest or
index, never a simple-signing payload; and `sign_image` refuses to sign a manifest that
carries a payload's top-level `critical` (cosign's own verifier reads a payload with
extra keys allowed, so that signature would be one over a payload there).

An image behind an index (a multi-platform tag) is signed over the index's digest by
`sign_image`, as cosign signs it; it runs as the wasi/wasm manifest the index lists. So
a signature counts over either: the manifest that runs, or the index it was reached
through (whose digest covers the manifest's, listed as its wasi/wasm entry). `run` under
trust (`trusted.vouch`) and `oci verify` apply this same rule.

Everything read is bounded: at most `MAX_SIGNATURES` layers and `MAX_REFERRERS`
referrers looked at, payloads of `MAX_PAYLOAD` and bundles of `MAX_BUNDLE` bytes
(declared sizes over them are refused without downloading), each blob checked against
its digest, and the whole check done within `VERIFY_DEADLINE` (each document's own
deadline alone let 64 payloads and 256 referrers take hours).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModuleError, StockadeError
from ..trust.cosignkeys import CosignSecret, ImageKey
from ..trust.imagesig import (
    BUNDLE_TYPE,
    PAYLOAD_TYPE,
    SIGNATURE_ANNOTATION,
    bundle,
    check_bundle,
    check_payload,
    image_document_refusal,
    payload,
)
from .errors import BlobTooLarge, ImageNotFound, IntegrityError
from .image import manifest_kind, parse_json, select_platform
from .media import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256_digest
from .reference import Reference, is_digest
from .registry import Deadline, RegistryClient
from .transfer import fetch_manifest

__all__ = ["SignedImage", "ImageVerification", "sign_image", "verify_image", "signature_tag",
           "referrers_tag", "MAX_SIGNATURES", "MAX_REFERRERS", "MAX_PAYLOAD", "MAX_BUNDLE",
           "VERIFY_DEADLINE"]

MAX_SIGNATURES = 64
MAX_REFERRERS = 256
MAX_PAYLOAD = 64 * 1024
MAX_BUNDLE = 1024 * 1024
VERIFY_DEADLINE = 120.0  # seconds for all of `verify_image`: two documents' deadlines
SIGN_DEADLINE = 120.0  # seconds for all of `sign_image`: a dozen exchanges, each bounded
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # fixed: the same signatures, the same config


def signature_tag(digest: str) -> str:
    """cosign's signature tag of `digest`: `sha256-HEX.sig`."""
    return digest.replace(":", "-") + ".sig"


def referrers_tag(digest: str) -> str:
    """The referrers fallback tag of `digest`: `sha256-HEX`."""
    return digest.replace(":", "-")


def _json(value: Any) -> bytes:
    # cosign's manifests: Go's field order, no white space (not sorted keys).
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignedImage:
    """What `sign_image` wrote."""

    ref: Reference
    digest: str
    signature_tag: str
    signature: str
    payload: bytes
    bundle_digest: str
    referrers_api: bool


def _existing_layers(client: RegistryClient, ref: Reference, tag: str) -> list[dict[str, Any]]:
    try:
        body, _, _ = client.get_manifest(ref.repository, tag, f"{ref.repository}:{tag}")
    except ImageNotFound:
        return []
    layers = parse_json(body, f"{tag}: signature manifest").get("layers")
    if not isinstance(layers, list) or not all(isinstance(item, dict) for item in layers):
        raise ModuleError(f"{tag}: the existing signature manifest has no layers list")
    if len(layers) >= MAX_SIGNATURES:
        raise ModuleError(f"{tag}: already {len(layers)} signatures (at most {MAX_SIGNATURES})")
    return layers


def _put_blob(client: RegistryClient, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    client.upload_blob(repo, digest, data)
    return digest


def sign_image(ref: Reference, secret: CosignSecret, insecure: frozenset[str] = frozenset(),
               with_bundle: bool = True) -> SignedImage:
    """Sign the manifest `ref` resolves to in its registry (cosign layout and, with
    `with_bundle`, a Sigstore bundle referrer). Raises the registry errors, ImageNotFound
    when the image is not pushed, ModuleError for a malformed existing signature tag or
    a document that is not an image manifest or index (one carrying a payload's
    `critical` included); RegistryUnavailable too when it is not done within
    `SIGN_DEADLINE` (each exchange just within its own deadline held a signing for
    minutes)."""
    late = f"signing did not finish within {SIGN_DEADLINE:g} s; refused"
    with RegistryClient(ref, insecure) as client, \
            client.within(Deadline.after(SIGN_DEADLINE), late):
        repo = ref.repository
        body, media_type = fetch_manifest(client, ref, ref.selector, ref.digest)
        digest = sha256_digest(body)
        refused = image_document_refusal(parse_json(body, f"{ref}: manifest"))
        if refused is not None:
            raise ModuleError(f"{ref}: refused to sign: {refused}")
        data = payload(f"{ref.registry}/{repo}", digest)
        signature = base64.b64encode(secret.sign(data)).decode()
        tag = signature_tag(digest)
        layers = _existing_layers(client, ref, tag)
        layers.append({"mediaType": PAYLOAD_TYPE, "size": len(data),
                       "digest": _put_blob(client, repo, data),
                       "annotations": {SIGNATURE_ANNOTATION: signature}})
        config = _json({"architecture": "", "created": _ZERO_TIME,
                        "history": [{"created": _ZERO_TIME} for _ in layers], "os": "",
                        "rootfs": {"type": "layers",
                                   "diff_ids": [layer.get("digest") for layer in layers]},
                        "config": {}})
        manifest = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "size": len(config),
                                     "digest": _put_blob(client, repo, config)},
                          "layers": layers})
        client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
        bundle_digest, indexed = "", False
        if with_bundle:
            bundle_digest, indexed = _attach_bundle(client, ref, secret, body, media_type,
                                                    digest)
    return SignedImage(ref, digest, tag, signature, data, bundle_digest, indexed)


def _attach_bundle(client: RegistryClient, ref: Reference, secret: CosignSecret,
                   body: bytes, media_type: str, digest: str) -> tuple[str, bool]:
    repo = ref.repository
    data = bundle(secret, body, digest)
    layer = {"mediaType": BUNDLE_TYPE, "size": len(data), "digest": _put_blob(client, repo, data)}
    annotations = {"dev.sigstore.bundle.content": "message-signature"}
    artifact = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
                      "config": {"mediaType": EMPTY_TYPE, "size": len(EMPTY),
                                 "digest": _put_blob(client, repo, EMPTY)},
                      "layers": [layer],
                      "subject": {"mediaType": media_type or OCI_MANIFEST, "size": len(body),
                                  "digest": digest},
                      "annotations": annotations})
    artifact_digest = sha256_digest(artifact)
    indexed = client.put_manifest(repo, artifact_digest, artifact, OCI_MANIFEST)
    if not indexed:  # no referrers API: keep the fallback tag's index up to date
        tag = referrers_tag(digest)
        try:
            raw, _, _ = client.get_manifest(repo, tag, f"{repo}:{tag}")
            entries = parse_json(raw, f"{tag}: referrers index").get("manifests") or []
        except ImageNotFound:
            entries = []
        if not isinstance(entries, list):
            raise ModuleError(f"{tag}: the referrers tag is not an image index")
        entries = [e for e in entries if isinstance(e, dict)
                   and e.get("digest") != artifact_digest][-(MAX_REFERRERS - 1):]
        entries.append({"mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
                        "digest": artifact_digest, "size": len(artifact),
                        "annotations": annotations})
        index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        client.put_manifest(repo, tag, index, OCI_INDEX)
    return artifact_digest, indexed


@dataclass(frozen=True)
class ImageVerification:
    """What an image's signatures say about a set of trusted keys: those over the
    manifest `digest`, and over the `index` it was reached through (None when none)."""

    ref: Reference
    digest: str
    verified: tuple[tuple[str, str, str], ...] = ()  # (kind, key id, digest signed)
    refused: tuple[str, ...] = ()
    wanted: tuple[str, ...] = ()
    found: int = field(default=0)
    index: str | None = None

    @property
    def ok(self) -> bool:
        """True when a trusted key signed the manifest or its index (cosign signature or
        bundle)."""
        return bool(self.verified)

    def describe(self) -> str:
        """One line naming what was found and which key ids are trusted."""
        wanted = ", ".join(self.wanted) or "none"
        image = f"image {self.digest}" + (f" (index {self.index})" if self.index else "")
        if self.ok:
            by = ", ".join(f"{key} ({kind}{', over the index' if signed == self.index else ''})"
                           for kind, key, signed in self.verified)
            return f"{image} signed by trusted key {by}"
        if not self.found:
            return f"{image} has no signatures; trusted image key ids: {wanted}"
        reasons = "; ".join(dict.fromkeys(self.refused))[:400]
        return (f"{image}: no valid signature by a trusted key ({self.found} "
                f"found: {reasons}); trusted image key ids: {wanted}")

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"ref": str(self.ref), "digest": self.digest, "index": self.index,
                "verified": self.ok, "signatures_found": self.found,
                "verified_by": [{"kind": kind, "key_id": key, "digest": signed}
                                for kind, key, signed in self.verified],
                "refused": list(self.refused), "key_ids_trusted": list(self.wanted)}


class _Checks:
    def __init__(self, digest: str, keys: Sequence[ImageKey], label: str = "") -> None:
        self.digest, self.keys, self.label = digest, keys, label
        self.verified: list[tuple[str, str, str]] = []
        self.refused: list[str] = []
        self.found = 0
        self.document_read = False
        self.document_refusal: str | None = None  # of the signed document, once read

    def outcome(self, kind: str, key: ImageKey | None, reason: str) -> None:
        self.found += 1
        if key is not None:
            self.verified.append((kind, key.key_id, self.digest))
        else:
            self.refused.append(f"{self.label}{kind}: {reason}")


def verify_image(ref: Reference, keys: Sequence[ImageKey],
                 insecure: frozenset[str] = frozenset(), digest: str | None = None,
                 index: str | None = None) -> ImageVerification:
    """Check the signatures of image manifest `digest`, and of the `index` it was reached
    through when given, in `ref`'s repository against `keys`. Without `digest`, what `ref`
    resolves to now: a manifest, or an index and its wasi/wasm manifest. Raises
    RegistryUnavailable, ImageNotFound for the image itself; anything wrong with a
    signature is a refusal in the result, but the check not done within
    `VERIFY_DEADLINE` is RegistryUnavailable."""
    late = f"the signature check did not finish within {VERIFY_DEADLINE:g} s; refused"
    with RegistryClient(ref, insecure) as client, \
            client.within(Deadline.after(VERIFY_DEADLINE), late):
        if digest is None:
            digest, index = _resolved(client, ref)
        checks = [_Checks(digest, keys)]
        if index is not None:
            checks.append(_Checks(index, keys, "index "))
        for each in checks:
            _check_cosign(client, ref, each)
            _check_bundles(client, ref, each)
    return ImageVerification(
        ref.with_digest(index or digest), digest,
        tuple(item for each in checks for item in each.verified),
        tuple(item for each in checks for item in each.refused),
        tuple(k.key_id for k in keys), sum(each.found for each in checks), index)


def _resolved(client: RegistryClient, ref: Reference) -> tuple[str, str | None]:
    """(manifest digest, index digest or None) of what `ref` names in the registry: an
    index's wasi/wasm entry and the index, else the document itself (an index with no
    such entry, or no image at all, is checked as it is)."""
    body, media_type = fetch_manifest(client, ref, ref.selector, ref.digest)
    digest = sha256_digest(body)
    try:
        document = parse_json(body, f"{ref}: manifest")
        if manifest_kind(document, media_type) != "index":
            return digest, None
        entry = select_platform(document, str(ref)).get("digest")
    except StockadeError:
        return digest, None
    return (entry, digest) if is_digest(entry) and isinstance(entry, str) else (digest, None)


def _small_blob(client: RegistryClient, repo: str, descriptor: dict[str, Any], limit: int,
                what: str) -> bytes | str:
    """The blob's bytes, or why not (a refusal, never an exception)."""
    size, digest = descriptor.get("size"), descriptor.get("digest")
    if not isinstance(size, int) or not isinstance(digest, str):
        return f"{what} descriptor without size or digest"
    if size > limit:
        return f"{what} declares {size} bytes (at most {limit})"
    try:
        return client.get_blob(repo, digest, limit, what)
    except (ImageNotFound, BlobTooLarge, IntegrityError) as exc:
        return exc.message


def _manifest(client: RegistryClient, repo: str, selector: str, what: str,
              ) -> dict[str, Any] | str | None:
    try:
        body, _, header = client.get_manifest(repo, selector, what)
    except ImageNotFound:
        return None
    except BlobTooLarge as exc:
        return exc.message
    if selector.startswith("sha256:") and sha256_digest(body) != selector:
        return f"{what}: content does not match its digest"
    try:
        return parse_json(body, what)
    except ModuleError as exc:
        return exc.message


def _check_cosign(client: RegistryClient, ref: Reference, checks: _Checks) -> None:
    tag = signature_tag(checks.digest)
    manifest = _manifest(client, ref.repository, tag, f"{tag}")
    if manifest is None:
        return
    if isinstance(manifest, str):
        checks.outcome("cosign", None, manifest)
        return
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        checks.outcome("cosign", None, f"{tag} has no layers")
        return
    for layer in layers[:MAX_SIGNATURES]:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_TYPE:
            checks.outcome("cosign", None, "a layer that is not a simple-signing payload")
            continue
        data = _small_blob(client, ref.repository, layer, MAX_PAYLOAD, "payload")
        if isinstance(data, str):
            checks.outcome("cosign", None, data)
            continue
        annotation = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION) \
            if isinstance(layer.get("annotations"), dict) else None
        checks.outcome("cosign", *check_payload(data, annotation, checks.digest, checks.keys,
                                                f"{ref.registry}/{ref.repository}"))
    if len(layers) > MAX_SIGNATURES:
        checks.refused.append(f"cosign: {len(layers) - MAX_SIGNATURES} signatures past the "
                              f"first {MAX_SIGNATURES} not looked at")


def _check_bundles(client: RegistryClient, ref: Reference, checks: _Checks) -> None:
    repo = ref.repository
    raw = client.referrers(repo, checks.digest)
    index: dict[str, Any] | str | None
    if raw is not None:
        try:
            index = parse_json(raw, "referrers")
        except ModuleError as exc:
            index = exc.message
    else:
        index = _manifest(client, repo, referrers_tag(checks.digest), "referrers tag")
    if index is None:
        return
    if isinstance(index, str):
        checks.outcome("bundle", None, index)
        return
    entries = index.get("manifests")
    if not isinstance(entries, list):
        checks.outcome("bundle", None, "the referrers index lists no manifests")
        return
    for entry in entries[:MAX_REFERRERS]:
        if not isinstance(entry, dict) or entry.get("artifactType") != BUNDLE_TYPE:
            continue
        selector = str(entry.get("digest"))
        if not selector.startswith("sha256:") or len(selector) != 71:
            checks.outcome("bundle", None, "a referrer without a sha256 digest")
            continue
        artifact = _manifest(client, repo, selector, "bundle manifest")
        if not isinstance(artifact, dict):
            checks.outcome("bundle", None, artifact or f"referrer {selector} is missing")
            continue
        subject = artifact.get("subject")
        layers = artifact.get("layers")
        if not isinstance(subject, dict) or subject.get("digest") != checks.digest:
            checks.outcome("bundle", None, f"referrer {selector[:19]} is about another image")
            continue
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) \
                or layers[0].get("mediaType") != BUNDLE_TYPE:
            checks.outcome("bundle", None, f"referrer {selector[:19]} holds no single bundle")
            continue
        data = _small_blob(client, repo, layers[0], MAX_BUNDLE, "bundle")
        if isinstance(data, str):
            checks.outcome("bundle", None, data)
            continue
        key, reason = check_bundle(data, checks.digest, checks.keys)
        if key is not None:
            reason = _signed_document(client, repo, checks) or ""
            key = None if reason else key
        checks.outcome("bundle", key, reason)


def _signed_document(client: RegistryClient, repo: str, checks: _Checks) -> str | None:
    """Why the document whose digest a bundle signs is not an image manifest or index,
    or None. Read only once a bundle verifies: a cosign signature over a simple-signing
    payload is a valid bundle signature over that payload's digest."""
    if not checks.document_read:
        document = _manifest(client, repo, checks.digest, f"image {checks.digest}")
        checks.document_read = True
        checks.document_refusal = (document if isinstance(document, str)
                                   else f"image {checks.digest} is missing" if document is None
                                   else image_document_refusal(document))
    return checks.document_refusal

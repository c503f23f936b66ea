"""`inspect_image`: what `stockade oci inspect` reports about one image."""

from __future__ import annotations

from typing import Any

from .errors import BlobTooLarge, RegistryAuthError, RegistryUnavailable
from .reference import parse_reference
from .registry import RegistryClient, insecure_hosts
from .resolve import resolve
from .store import Store

__all__ = ["inspect_image", "signature_tags"]


def signature_tags(digest: str, tags: list[str]) -> list[str]:
    """Tags holding signatures or attestations of `digest` (cosign's `sha256-HEX.sig`,
    `.att`, `.sbom` tags, the referrers fallback)."""
    prefix = digest.replace(":", "-")
    return sorted(tag for tag in tags if tag.startswith(prefix))


def inspect_image(text: str, insecure: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON-ready report of image `text` (pulled into the store when absent). Signature
    tags come from the registry; when it cannot list them, `signatures` is None and
    `signatures_unknown` says why (local tags would read as a negative answer to a
    check that never ran)."""
    store = Store.default()
    resolved = resolve(text, store, insecure)
    pulled = resolved.pulled
    ref = parse_reference(text)
    signatures: list[str] | None = None
    unknown: str | None = None
    try:
        with RegistryClient(ref, insecure_hosts(insecure), timeout=5.0) as client:
            tags = client.tags(ref.repository)
            signatures = signature_tags(pulled.digest, tags)
            if pulled.index_digest is not None:  # signed as the index it came through
                signatures += signature_tags(pulled.index_digest, tags)
    except RegistryAuthError as exc:
        unknown = f"the registry refused to list tags: {exc.message}"
    except RegistryUnavailable as exc:
        unknown = f"registry unreachable: {exc.message}"
    except BlobTooLarge as exc:  # a hostile tags list
        unknown = f"tags list refused: {exc.message}"
    image = pulled.image
    return {
        "ref": str(resolved.pinned), "digest": pulled.digest, "index": pulled.index_digest,
        "layout": image.layout,
        "platform": image.platform, "mediaType": pulled.descriptor.get("mediaType"),
        "config": pulled.manifest.get("config"), "layers": pulled.manifest.get("layers"),
        "annotations": pulled.manifest.get("annotations") or {},
        "module_digest": pulled.module_digest, "entrypoint": list(image.entrypoint),
        "cmd": list(image.cmd), "env": list(image.env), "working_dir": image.working_dir,
        "signatures": signatures, "signatures_unknown": unknown,
    }

"""`inspect_image`: what `stockade oci inspect` reports about one image."""

from __future__ import annotations

from typing import Any

from .errors import BlobTooLarge, RegistryUnavailable
from .reference import parse_reference
from .registry import RegistryClient, insecure_hosts
from .resolve import resolve
from .store import REF_ANNOTATION, Store

__all__ = ["inspect_image", "signature_tags"]


def signature_tags(digest: str, tags: list[str]) -> list[str]:
    """Tags holding signatures or attestations of `digest` (cosign's `sha256-HEX.sig`,
    `.att`, `.sbom` tags, the referrers fallback)."""
    prefix = digest.replace(":", "-")
    return sorted(tag for tag in tags if tag.startswith(prefix))


def inspect_image(text: str, insecure: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON-ready report of image `text` (pulled into the store when absent). Signature
    tags come from the registry when it answers, else from the local store."""
    store = Store.default()
    resolved = resolve(text, store, insecure)
    pulled = resolved.pulled
    ref = parse_reference(text)
    tags: list[str] = []
    try:
        with RegistryClient(ref, insecure_hosts(insecure), timeout=5.0) as client:
            tags = client.tags(ref.repository)
    except (RegistryUnavailable, BlobTooLarge):  # a hostile tags list: use the local ones
        base = f"{ref.registry}/{ref.repository}:"
        tags = [str(entry.get("annotations", {}).get(REF_ANNOTATION, ""))[len(base):]
                for entry in store.entries()
                if str(entry.get("annotations", {}).get(REF_ANNOTATION, "")).startswith(base)]
    image = pulled.image
    return {
        "ref": str(resolved.pinned), "digest": pulled.digest, "layout": image.layout,
        "platform": image.platform, "mediaType": pulled.descriptor.get("mediaType"),
        "config": pulled.manifest.get("config"), "layers": pulled.manifest.get("layers"),
        "annotations": pulled.manifest.get("annotations") or {},
        "module_digest": pulled.module_digest, "entrypoint": list(image.entrypoint),
        "cmd": list(image.cmd), "env": list(image.env), "working_dir": image.working_dir,
        "signatures": signature_tags(pulled.digest, tags),
    }

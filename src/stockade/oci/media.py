"""Media types, canonical JSON and digests: the vocabulary both image layouts share."""

from __future__ import annotations

import hashlib
import json
import reprlib
from typing import Any

from ..display import printable

__all__ = [
    "OCI_MANIFEST", "OCI_INDEX", "DOCKER_MANIFEST", "DOCKER_LIST", "MANIFEST_TYPES",
    "INDEX_TYPES", "OCI_CONFIG", "DOCKER_CONFIG", "WASM_CONFIG", "WASM_LAYER",
    "TAR_LAYERS", "GZIP_LAYERS", "COMPAT_ANNOTATION", "WASI_OSES",
    "canonical_json", "sha256_digest", "is_wasm_platform", "platform_name", "shown",
    "SHOWN_CHARS", "descriptor_size",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
# The CNCF Wasm OCI artifact (cncf/tag-runtime wasm-oci-artifact).
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/wasm"

TAR_LAYERS = ("application/vnd.oci.image.layer.v1.tar",
              "application/vnd.docker.image.rootfs.diff.tar")
GZIP_LAYERS = ("application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip")
# What crun's Wasm handler looks for on a Docker+Wasm image.
COMPAT_ANNOTATION = ("module.wasm.image/variant", "compat")
WASI_OSES = ("wasi", "wasip1", "wasip2")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8: the same value, the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    """`sha256:HEX` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_wasm_platform(os_name: object, architecture: object) -> bool:
    """True for wasi/wasm, wasip1/wasm and wasip2/wasm."""
    return architecture == "wasm" and os_name in WASI_OSES


# A registry-chosen value in a message: a few levels, a few items, a short string.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 3, 3
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
SHOWN_CHARS = 120  # hard cap on what `shown` returns


def descriptor_size(descriptor: dict[str, Any]) -> int | None:
    """A descriptor's `size` when it is an integer (a JSON `true` is not), else None."""
    size = descriptor.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def shown(value: object) -> str:
    """A value a registry chose, for a one-line message: quoted when a string, else its
    JSON type's Python name and an outline (`list [[...]]`); at most `SHOWN_CHARS`
    characters, control characters escaped. A 4 MiB string or a list nested 900 deep
    would otherwise be quoted whole."""
    text = _SHORT.repr(value)
    if not isinstance(value, str):
        text = f"{type(value).__name__} {text}"
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS - 3] + "..."
    return printable(text)


def _part(value: object) -> str:
    if not value:
        return "?"
    return printable(value) if isinstance(value, str) and len(value) <= 64 else shown(value)


def platform_name(os_name: object, architecture: object, variant: object = None) -> str:
    """`os/arch[/variant]` for messages (`?` for a missing part; a part that is not a
    short string shown as `shown` does)."""
    name = f"{_part(os_name)}/{_part(architecture)}"
    return f"{name}/{_part(variant)}" if variant else name

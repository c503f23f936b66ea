"""Wasm as OCI images: both layouts, the local store, the registry client, pull and push.

Nothing here imports wasmtime or httpx at import time: `stockade run oci://…` pays for
the registry client only when it has to pull.
"""

from __future__ import annotations

from .build import BuiltImage, build_image
from .errors import (
    BadReference,
    BlobTooLarge,
    ImageNotFound,
    IntegrityError,
    PlatformMismatch,
    RegistryAuthError,
    RegistryUnavailable,
    StoreCorrupt,
    StoreRefused,
    UnsupportedBundle,
)
from .image import WasmImage
from .reference import Reference, parse_reference
from .resolve import ResolvedModule, guest_process, is_oci, resolve
from .store import Store
from .transfer import PulledImage, load_local, pull, push

__all__ = [
    "BuiltImage", "build_image", "WasmImage", "Reference", "parse_reference", "Store",
    "PulledImage", "pull", "push", "load_local", "ResolvedModule", "resolve", "is_oci",
    "guest_process",
    "BadReference", "BlobTooLarge", "ImageNotFound", "IntegrityError", "PlatformMismatch",
    "RegistryAuthError", "RegistryUnavailable", "StoreCorrupt", "StoreRefused",
    "UnsupportedBundle",
]

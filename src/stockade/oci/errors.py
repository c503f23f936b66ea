"""Errors of the OCI layer, each a `StockadeError` with its own exit code and HTTP status::

    StockadeError
    ├── UsageError
    │   ├── BadReference            125 / 400   not an image reference
    │   └── StoreRefused            125 / 500   a local store another user owns or can write
    ├── ModuleNotFound
    │   └── ImageNotFound           127 / 404   no such repository, tag or digest
    ├── ModuleError
    │   └── PlatformMismatch        126 / 422   not a wasi/wasm image (names the platform)
    ├── RegistryUnavailable          69 / 502   unknown host, refused, TLS or protocol failure
    │   └── RegistryAuthError        77 / 502   the registry refused our credentials
    ├── IntegrityError               65 / 502   content does not match its digest (pull)
    ├── StoreCorrupt                 74 / 500   a blob in the local store does not match its digest
    ├── BlobTooLarge                 75 / 413   a manifest, config or layer over its size limit
    └── UnsupportedBundle            78 / 422   an OCI runtime bundle that is not a Wasm module
"""

from __future__ import annotations

from ..errors import ModuleError, ModuleNotFound, StockadeError, UsageError

__all__ = [
    "BadReference",
    "ImageNotFound",
    "PlatformMismatch",
    "RegistryUnavailable",
    "RegistryAuthError",
    "IntegrityError",
    "StoreCorrupt",
    "StoreRefused",
    "BlobTooLarge",
    "UnsupportedBundle",
]


class BadReference(UsageError):
    """A string that is not an image reference (`[REGISTRY/]REPO[:TAG][@sha256:HEX]`)."""


class ImageNotFound(ModuleNotFound):
    """The registry or the local store has no such repository, tag or digest."""


class PlatformMismatch(ModuleError):
    """The image is for another platform than wasi/wasm; the message names it."""


class RegistryUnavailable(StockadeError):
    """The registry cannot be reached or spoke something other than the distribution API."""

    exit_code = 69
    http_status = 502


class RegistryAuthError(RegistryUnavailable):
    """The registry refused the credentials (or there were none and it wants some)."""

    exit_code = 77


class IntegrityError(StockadeError):
    """Pulled content does not match the digest (or size) that names it."""

    exit_code = 65
    http_status = 502


class StoreCorrupt(StockadeError):
    """A blob of the local store does not match its digest; it has been removed."""

    exit_code = 74
    http_status = 500


class StoreRefused(UsageError):
    """The local store, the cache directory holding it, or a file in it is owned by
    another user or writable by group or others (whoever can write it chooses the module
    a reference runs), or out of this user's reach. The message names the path and which
    of these it is."""

    http_status = 500


class BlobTooLarge(StockadeError):
    """A manifest, config or layer is larger than its limit."""

    exit_code = 75
    http_status = 413


class UnsupportedBundle(StockadeError):
    """An OCI runtime bundle Stockade cannot run (not wasi/wasm); the message names why."""

    exit_code = 78
    http_status = 422

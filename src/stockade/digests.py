"""Digests and MACs on the start-up path, without loading OpenSSL.

`import hashlib` (or `hmac`) loads `_hashlib`, which maps libcrypto and lists its
algorithms: about 12M instructions, a twentieth of `import wasmtime`, on every
`stockade run` that only needs to hash a few bytes and check one MAC. CPython builds its
own SHA-256 and BLAKE2 into modules of their own (`_sha256`, `_sha2` from 3.12;
`_blake2`), which load without libcrypto; `hashlib` is the fallback where a build lacks
them. Hashing large inputs (whole modules) stays with `hashlib`, whose OpenSSL code is
faster per byte.

- `sha256(data)`: SHA-256 (the same digest `hashlib.sha256` gives).
- `keyed_blake2b(key, data, person)`: BLAKE2b-256 in its keyed mode, a MAC with
  HMAC-SHA256's strength (RFC 7693 section 2.9); `person` separates purposes.
- `compare_digest(a, b)`: the constant-time comparison `hmac.compare_digest` is.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Hash(Protocol):
        """What `sha256` and `keyed_blake2b` return (as `hashlib`'s objects do)."""

        def update(self, data: bytes | memoryview, /) -> None: ...
        def digest(self) -> bytes: ...
        def hexdigest(self) -> str: ...

__all__ = ["sha256", "keyed_blake2b", "compare_digest", "MAC_BYTES"]

MAC_BYTES = 32

try:  # CPython's own implementations, each a small module of its own
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - a build without it
    from hashlib import blake2b as _blake2b
try:
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - 3.12 renamed the module
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256 as _sha256
try:
    from _operator import _compare_digest as _compare
except ImportError:  # pragma: no cover
    from hmac import compare_digest as _compare

sha256: Callable[[bytes], Hash] = _sha256
compare_digest: Callable[[bytes, bytes], bool] = _compare


def keyed_blake2b(key: bytes, data: bytes | memoryview = b"", person: bytes = b"") -> Hash:
    """A BLAKE2b hash object keyed with `key` (up to 64 bytes) with a `MAC_BYTES` digest;
    `person` (up to 16 bytes) binds it to one use. Feed more with `update`."""
    return _blake2b(data, digest_size=MAC_BYTES, key=key, person=person)

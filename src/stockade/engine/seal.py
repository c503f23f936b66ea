"""Authenticating native code: this host's key and the MAC trailer of compiled modules.

A `.cwasm` is machine code, and wasmtime's `deserialize` checks only its engine header.
Stockade therefore loads one only when it carries a trailer that this host's key
authenticates::

    payload (wasmtime's serialized module: an ELF file)
    MAGIC        16 bytes  b"\\0stockade-seal2\\0" or b"\\0stockade-seal1\\0"
    fingerprint  16 bytes  the engine fingerprint it was compiled for (ASCII hex)
    MAC          32 bytes  seal2: BLAKE2b-256 keyed with the key, personalised
                           "stockade-aot-v2", over "stockade-aot-v2\\0" purpose "\\0"
                           fingerprint "\\0" payload
                           seal1: HMAC-SHA256(key, "stockade-aot-v1\\0" purpose "\\0"
                           fingerprint "\\0" payload)

`purpose` binds where an artifact may be used: `cwasm` (a file written by `stockade
compile`) or `cache:<sha256>` (the AoT cache entry of the module with that digest), so a
cache entry cannot stand for another module and a compiled file cannot be planted in the
cache. wasmtime ignores bytes after the ELF sections, so a sealed file still maps directly
with `deserialize_file`; the MAC is checked before wasmtime sees a byte.

Both MACs are 256-bit, keyed with the same key, and equally trusted; `seal` picks by
size. Keyed BLAKE2b (`seal2`) is built into CPython, so checking it does not load
OpenSSL (`stockade.digests`): a twentieth of a `stockade run` of a small module.
Above `LARGE` bytes HMAC-SHA256 (`seal1`, the only form of earlier versions) is cheaper:
OpenSSL's SHA-256 (SHA-NI) hashes a large module faster than CPython's BLAKE2b by more
than it costs to load. `unseal` verifies either; the AoT cache seals an entry again when
its form is not the one `seal` picks for its size (`resealable`), once.

The key is 32 random bytes in `config_dir()/aot.key` (outside the cache), kept by
`stockade.keys` (created 0600 with an atomic link on first use; refused when its directory
is group/other-writable or owned by another uid, or the file is not a regular file of this
uid that only it can access). Delete the file to rotate the key: every artifact sealed
with the old one is then refused (the cache recompiles its entries; `.cwasm` files must
be compiled again).
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..digests import compare_digest, keyed_blake2b
from ..keys import KEY_BYTES, KeyFileError, aot_key_path, read_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["SealError", "KeyUnavailable", "TRAILER_SIZE", "KEY_BYTES", "key_path", "host_key",
           "install_key", "scoped_key", "scope_name", "vouch", "vouched", "vouch_for", "seal",
           "unseal", "resealable", "strip", "tag", "tag_matches", "LARGE"]

MAGIC = b"\0stockade-seal2\0"
SHA256_MAGIC = b"\0stockade-seal1\0"  # HMAC-SHA256, for payloads above LARGE
LARGE = 4 * 1024**2
_FINGERPRINT = 16
_MAC = 32
TRAILER_SIZE = len(MAGIC) + _FINGERPRINT + _MAC
_DOMAIN = b"stockade-aot-v2\0"
_SHA256_DOMAIN = b"stockade-aot-v1\0"
_PERSON = b"stockade-aot-v2"
_TAG_PERSON = b"stockade-tag-v2"
_SCOPE_PERSON = b"stockade-scope"

_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


class SealError(Exception):
    """An artifact is not authenticated; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyUnavailable(SealError):
    """This host's key cannot be used (insecure, unreadable, or cannot be created)."""

    def __init__(self, reason: str, *, insecure: bool) -> None:
        super().__init__(reason)
        self.insecure = insecure


def key_path() -> Path:
    """Where this user's key lives: `config_dir()/aot.key`."""
    return aot_key_path()


def host_key(path: Path | None = None) -> bytes:
    """This user's key (created on first use; read once per process). Raises
    KeyUnavailable: `insecure` when the file or its directory could have been read or
    replaced by someone else, else when it cannot be created or read."""
    path = path or key_path()
    with _keys_lock:
        key = _keys.get(path)
        if key is None:
            try:
                found = read_key(path)
            except KeyFileError as exc:
                raise KeyUnavailable(exc.reason, insecure=exc.insecure) from None
            if found is None:  # read_key creates it; this only narrows the type
                raise KeyUnavailable(f"{path} could not be created", insecure=False)
            key = _keys[path] = found
        return key


def install_key(key: bytes, path: Path | None = None) -> None:
    """Make `key` the key `host_key(path)` returns in this process. An isolated worker
    cannot reach the config directory once hardened: its parent reads the key (see
    `stockade.keys`) and sends it over the plan pipe, and the worker installs it here."""
    if len(key) != KEY_BYTES:
        raise KeyUnavailable(f"a key of {len(key)} bytes was handed over, not {KEY_BYTES}",
                             insecure=True)
    with _keys_lock:
        _keys[path or key_path()] = bytes(key)


def scoped_key(key: bytes, scope: str) -> bytes:
    """The key of one scope of workers (`"isolated"`, `"cordon:NAME"`), derived from this
    host's: what a worker seals with is all it holds, so code that took it over can
    forge entries only its own scope's workers accept, never this host's (the parent's,
    `stockade run`'s) nor another cordon's. One-way: the host key cannot be recovered."""
    return keyed_blake2b(key, scope.encode("utf-8", "surrogateescape"),
                         _SCOPE_PERSON).digest()


def scope_name(scope: str) -> str:
    """A directory name for `scope` (its cache beside this host's): a digest, so any
    cordon name is a safe single path component."""
    return keyed_blake2b(b"", scope.encode("utf-8", "surrogateescape"),
                         _SCOPE_PERSON).hexdigest()[:32]


_vouched: set[str] = set()


def vouch_for(data: bytes, key: bytes) -> str | None:
    """The sha256 (hex) of a `.cwasm` whose MAC verifies under `key` (this host's), for
    whatever engine configuration its trailer names; None when it does not. A parent
    hands these digests to its workers (`vouch`), which hold only a scope's key."""
    if len(data) < TRAILER_SIZE:
        return None
    start = len(data) - TRAILER_SIZE + len(MAGIC)
    fingerprint = data[start:start + _FINGERPRINT].rstrip(b"\0").decode("ascii", "replace")
    try:
        unseal(data, fingerprint, "cwasm", key)
    except SealError:
        return None
    import hashlib

    return hashlib.sha256(data).hexdigest()


def vouch(digests: frozenset[str]) -> None:
    """Accept, in this process, the `.cwasm` files with these sha256 digests as sealed:
    the parent checked them under this host's key (`vouch_for`)."""
    _vouched.update(digests)


def vouched(data: bytes, fingerprint: str) -> int | None:
    """The payload length of `data` when its exact bytes were vouched for and its trailer
    names `fingerprint`; None otherwise (then `unseal` decides, and says why)."""
    if not _vouched or len(data) < TRAILER_SIZE:
        return None
    import hashlib

    start = len(data) - TRAILER_SIZE + len(MAGIC)
    wanted = fingerprint.encode("ascii")[:_FINGERPRINT].ljust(_FINGERPRINT, b"\0")
    if data[start:start + _FINGERPRINT] != wanted:
        return None
    if hashlib.sha256(data).hexdigest() not in _vouched:
        return None
    return len(data) - TRAILER_SIZE


def seal(payload: bytes | memoryview, fingerprint: str, purpose: str, key: bytes) -> bytes:
    """The trailer to append to `payload`: `seal2` up to `LARGE` bytes, else `seal1`
    (see the module docstring)."""
    tag_bytes = fingerprint.encode("ascii")[:_FINGERPRINT].ljust(_FINGERPRINT, b"\0")
    magic = _magic(len(payload))
    compute = _mac if magic == MAGIC else _sha256_mac
    return magic + tag_bytes + compute(key, purpose, tag_bytes, payload)


def unseal(data: Buffer, fingerprint: str, purpose: str, key: bytes) -> int:
    """The payload length of a sealed artifact (`seal2` or `seal1`) whose MAC verifies
    for this engine `fingerprint` and `purpose`. Raises SealError naming what is wrong."""
    view = memoryview(data)
    try:
        magic = bytes(view[-TRAILER_SIZE:][:len(MAGIC)]) if len(view) >= TRAILER_SIZE else b""
        if magic not in (MAGIC, SHA256_MAGIC):
            raise SealError("it carries no Stockade MAC (not made by `stockade compile` or "
                            "the cache of this host)")
        end = len(view) - TRAILER_SIZE
        found = bytes(view[end + len(MAGIC):end + len(MAGIC) + _FINGERPRINT])
        wanted = fingerprint.encode("ascii")[:_FINGERPRINT].ljust(_FINGERPRINT, b"\0")
        if found != wanted:
            shown = found.rstrip(b"\0").decode("ascii", "replace")
            raise SealError(f"it was compiled for another engine configuration ({shown}, "
                            f"this run needs {fingerprint})")
        mac = bytes(view[len(view) - _MAC:])
        compute = _mac if magic == MAGIC else _sha256_mac
        if not compare_digest(mac, compute(key, purpose, wanted, view[:end])):
            raise SealError("its MAC does not verify (changed after it was compiled, or "
                            "made under another key)")
        return end
    finally:
        view.release()


def resealable(data: Buffer) -> bool:
    """Whether sealed `data` carries the other MAC than `seal` picks for its payload's
    size (an entry of an earlier version): still valid, cheaper to check once resealed."""
    view = memoryview(data)
    try:
        if len(view) < TRAILER_SIZE:
            return False
        magic = bytes(view[-TRAILER_SIZE:][:len(MAGIC)])
        return magic != _magic(len(view) - TRAILER_SIZE) and magic in (MAGIC, SHA256_MAGIC)
    finally:
        view.release()


def strip(data: bytes) -> bytes:
    """`data` without its trailer, if it has one. A module wasmtime mapped from a sealed
    file serializes as that whole file, trailer included: strip before sealing again."""
    if len(data) >= TRAILER_SIZE and data[-TRAILER_SIZE:].startswith((MAGIC, SHA256_MAGIC)):
        return data[:-TRAILER_SIZE]
    return data


def tag(key: bytes, *parts: str) -> str:
    """A hex MAC (keyed BLAKE2b-256) over `parts`, for small records such as the stat
    index."""
    message = "\0".join(("stockade-tag-v2", *parts)).encode()
    return keyed_blake2b(key, message, _TAG_PERSON).hexdigest()


def tag_matches(key: bytes, found: str, *parts: str) -> bool:
    """Whether `found` is the tag of `parts`: the current one, or an earlier version's
    (HMAC-SHA256, checked only when the current one does not match)."""
    seen = found.encode("ascii", "replace")
    if compare_digest(tag(key, *parts).encode(), seen):
        return True
    import hashlib
    import hmac

    message = "\0".join(("stockade-tag-v1", *parts)).encode()
    return compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest().encode(), seen)


def _mac(key: bytes, purpose: str, fingerprint: bytes, payload: bytes | memoryview) -> bytes:
    digest = keyed_blake2b(key, _DOMAIN + purpose.encode() + b"\0" + fingerprint + b"\0",
                           _PERSON)
    digest.update(payload)
    return digest.digest()


def _magic(size: int) -> bytes:
    return MAGIC if size <= LARGE else SHA256_MAGIC


def _sha256_mac(key: bytes, purpose: str, fingerprint: bytes,
                payload: bytes | memoryview) -> bytes:
    # Large artifacts (and those of earlier versions): OpenSSL is loaded only for them.
    import hashlib
    import hmac

    digest = hmac.new(key, _SHA256_DOMAIN + purpose.encode() + b"\0" + fingerprint + b"\0",
                      hashlib.sha256)
    digest.update(payload)
    return digest.digest()

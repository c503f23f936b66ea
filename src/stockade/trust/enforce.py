"""Trust policies applied: which modules may run at all.

`refusal` answers for one module's bytes under a `Trust`: None when it may run, else one
line naming the key ids found and the key ids trusted. It is `verdict`'s answer, the one
decision both `run` (the sandbox's trust gate) and `check` make: `check` once passed a
module `run` refused, its embedded signature counted where the policy required an image
signature (found by review). A trust's key files may hold both
kinds of signer: Ed25519 keys verify embedded module signatures, cosign (ECDSA P-256)
keys verify image signatures (`stockade.oci.signatures`), whose verified modules arrive
here as `Trust.vouched` digests. Keys are read once per set of key files (re-read when a
file changes), so a gateway pays the key parsing once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from ..fileid import FileKey, path_key
from ..policy.model import Trust
from .cosignkeys import ImageKey, parse_image_key
from .keys import KeyFileError, PublicKey, key_files, parse_public_keys, read_key_file
from .signing import Signatures, Verification, verify_module, verify_signatures

__all__ = ["refusal", "verdict", "trusted_keys", "image_keys", "check"]

_lock = threading.Lock()
_Stamp = tuple[str, FileKey | None]  # None: missing, or a directory's files unread
_cache: dict[tuple[_Stamp, ...], tuple[list[PublicKey], list[ImageKey]]] = {}


def _stamp(path: Path) -> _Stamp:
    return str(path), path_key(path)


def _stamps(paths: tuple[Path, ...]) -> tuple[_Stamp, ...]:
    """The stamps of every key file `paths` name, a directory's files included: keys
    were cached by a directory's own stamp, which a key rewritten in place inside it
    leaves as it was, so a revoked signer stayed trusted (found by review)."""
    stamps = []
    for path in paths:
        stamps.append(_stamp(path))
        if os.path.isdir(path):
            try:
                stamps.extend(_stamp(item) for item in key_files(Path(path)))
            except OSError:  # unreadable: `_load` says so, in its words
                stamps.append((str(path), None))  # after its own stamp: files unread
    return tuple(stamps)


def _load(paths: tuple[Path, ...]) -> tuple[list[PublicKey], list[ImageKey]]:
    modules: list[PublicKey] = []
    images: list[ImageKey] = []
    for path in paths:
        found = 0
        for item in key_files(Path(path)):
            data = read_key_file(item)
            image = parse_image_key(data, str(item))
            if image is not None:
                images.append(image)
            else:
                modules.extend(parse_public_keys(data, str(item)))
            found += 1
        if not found:
            raise KeyFileError(f"{path}: a key directory without keys")
    return modules, images


def _keys(paths: tuple[Path, ...]) -> tuple[list[PublicKey], list[ImageKey]]:
    stamp = _stamps(paths)
    with _lock:
        cached = _cache.get(stamp)
    if cached is not None:
        return cached
    keys = _load(paths)
    with _lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[stamp] = keys
    return keys


def trusted_keys(paths: tuple[Path, ...]) -> list[PublicKey]:
    """The module signers' (Ed25519) public keys of `paths` (files or directories).
    Raises KeyFileError."""
    return _keys(paths)[0]


def image_keys(paths: tuple[Path, ...]) -> list[ImageKey]:
    """The image signers' (cosign, ECDSA P-256) public keys of `paths`. Raises KeyFileError."""
    return _keys(paths)[1]


def check(data: bytes | Signatures, trust: Trust) -> Verification:
    """Verify `data`'s embedded signatures (or those `read_signatures` read of it)
    against the module keys `trust` names."""
    keys = trusted_keys(trust.keys)
    if isinstance(data, Signatures):
        return verify_signatures(data, keys)
    return verify_module(data, keys)


def verdict(sha256: str, data: bytes | Signatures, trust: Trust) -> tuple[bool, str]:
    """(whether `trust` admits the module whose sha256 hex digest is `sha256` and whose
    signatures are `data`, its bytes or what `read_signatures` read of them; one line
    saying why: `refusal`'s words when refused). Raises KeyFileError for a key file that
    cannot be read."""
    if not trust.require_signature:
        return True, "no signature required"
    if sha256 in trust.vouched:
        return True, "an image signature by a trusted key covers it"
    if trust.require_image_signature:
        wanted = ", ".join(k.key_id for k in image_keys(trust.keys))
        # A module file can never be admitted here, nor any image without an image key.
        trusted = (f"trusted image key ids: {wanted}" if wanted else
                   "no image (cosign) key among the trusted keys: nothing can run")
        return False, (f"refused: no image signature by a trusted key covers module "
                       f"sha256:{sha256} (image signatures required; {trusted})")
    verification = check(data, trust)
    return verification.ok, (verification.describe() if verification.ok
                             else f"refused: {verification.describe()}")


def refusal(data: bytes, trust: Trust) -> str | None:
    """Why `trust` refuses these module bytes, or None (`verdict`). Raises KeyFileError
    for a key file that cannot be read (a configuration error, never a silent pass)."""
    if not trust.require_signature:
        return None
    admitted, why = verdict(hashlib.sha256(data).hexdigest(), data, trust)
    return None if admitted else why

"""Sign a module (adding to the signatures it has) and verify it against trusted keys.

Verification is a whole-module check: a trusted key verifies when one of its signatures
covers a hash set whose *last* hash is the SHA-256 of every byte after the signature
section, exactly as those bytes are (the bytes that will run). The earlier hashes of a
set are running hashes taken at `signature_delimiter` sections: a module cut right after a
delimiter hashes to one of them, so accepting any hash of the set (as wasmsign2 does)
would pass a module missing its later sections. No partial verification is offered.
Work is bounded whatever the module claims: at most `MAX_CHECKS` Ed25519 verifications
per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..binary import MalformedModule
from ..errors import UsageError
from .keys import PublicKey, SecretKey
from .wasmsig import (
    SignatureData,
    SignatureEntry,
    SignatureFormatError,
    SignedHashes,
    assemble,
    content_hash,
    message,
    section_hashes,
    split,
)

__all__ = ["Signed", "Verification", "sign_module", "verify_module", "read_signatures",
           "MAX_CHECKS"]

MAX_CHECKS = 1024


@dataclass(frozen=True)
class Signed:
    """A newly signed module, with what was signed (for independent checkers)."""

    module: bytes
    message: bytes
    signature: bytes
    key_id: bytes | None
    hashes: tuple[bytes, ...]


def sign_module(data: bytes, secret: SecretKey, with_key_id: bool = True) -> Signed:
    """Sign `data` with `secret`, keeping the signatures it already has (a signer over the
    same sections joins their set). Raises UsageError for a malformed module, a broken
    signature section, or a second identical signature."""
    try:
        previous, rest = split(data)
    except (MalformedModule, SignatureFormatError) as exc:
        raise UsageError(f"cannot sign: {exc}") from None
    hashes, body = section_hashes(data, rest)
    msg = message(hashes)
    key_id = secret.public.key_id if with_key_id else None
    entry = SignatureEntry(key_id, secret.sign(msg))
    sets = list(previous.sets) if previous else []
    for index, signed in enumerate(sets):
        if list(signed.hashes) == hashes:
            if any(e.key_id == entry.key_id and e.signature == entry.signature
                   for e in signed.signatures):
                raise UsageError("cannot sign: already signed by this key")
            sets[index] = SignedHashes(signed.hashes, (*signed.signatures, entry))
            break
    else:
        sets.append(SignedHashes(tuple(hashes), (entry,)))
    module = assemble(SignatureData(tuple(sets)), body)
    try:
        split(module)  # what `verify` reads: a 65th hash set or 257th signature it refuses
    except SignatureFormatError as exc:
        raise UsageError(f"cannot sign: the signed module would break a bound: {exc}") from None
    return Signed(module, msg, entry.signature, key_id, tuple(hashes))


@dataclass(frozen=True)
class Verification:
    """What a module's signatures say about a set of trusted keys."""

    signed: bool
    found: tuple[bytes | None, ...] = ()
    wanted: tuple[bytes, ...] = ()
    verified: tuple[PublicKey, ...] = ()
    error: str | None = None
    checks: int = field(default=0, compare=False)

    @property
    def ok(self) -> bool:
        """True when at least one trusted key verified the whole module."""
        return bool(self.verified)

    def describe(self) -> str:
        """One line naming the key ids found and wanted."""
        wanted = ", ".join(k.hex() for k in self.wanted) or "none"
        if self.error:
            return f"signature unreadable ({self.error}); trusted key ids: {wanted}"
        if not self.signed:
            return f"module is not signed; trusted key ids: {wanted}"
        found = ", ".join(k.hex() if k else "(no key id)" for k in self.found) or "none"
        if self.ok:
            return f"signed by trusted key id {', '.join(k.key_id.hex() for k in self.verified)}"
        return (f"no valid signature by a trusted key: key ids found {found}; "
                f"trusted key ids {wanted}")

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "signed": self.signed, "verified": self.ok,
            "key_ids_found": [k.hex() if k else None for k in self.found],
            "key_ids_trusted": [k.hex() for k in self.wanted],
            "key_ids_verified": [k.key_id.hex() for k in self.verified],
            "error": self.error,
        }


def read_signatures(data: bytes) -> tuple[SignatureData | None, str | None]:
    """The module's signature data and an error (unreadable section), never raising."""
    try:
        return split(data)[0], None
    except (MalformedModule, SignatureFormatError) as exc:
        return None, str(exc)


def _covers_all(signed: SignedHashes, digest: bytes) -> bool:
    """Whether the set's final hash (the one taken over every section) is `digest`."""
    return bool(signed.hashes) and signed.hashes[-1] == digest


def verify_module(data: bytes, keys: Sequence[PublicKey]) -> Verification:
    """Which of `keys` signed the whole module. Never raises for bad input."""
    wanted = tuple(dict.fromkeys(k.key_id for k in keys))
    try:
        signature, rest = split(data)
    except (MalformedModule, SignatureFormatError) as exc:
        return Verification(False, wanted=wanted, error=str(exc))
    if signature is None:
        return Verification(False, wanted=wanted)
    found = tuple(dict.fromkeys(e.key_id for s in signature.sets for e in s.signatures))
    digest = content_hash(data, rest)
    verified: list[PublicKey] = []
    checks = 0
    for key in keys:
        key_id = key.key_id
        candidates = [(s, e) for s in signature.sets if _covers_all(s, digest)
                      for e in s.signatures if e.key_id is None or e.key_id == key_id]
        for signed, entry in candidates:
            if checks >= MAX_CHECKS:
                break
            checks += 1
            if key.verify(entry.signature, message(signed.hashes)):
                verified.append(key)
                break
    unique = tuple({k.raw: k for k in verified}.values())
    return Verification(True, found, wanted, unique, checks=checks)

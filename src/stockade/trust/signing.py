"""Sign a module (adding to the signatures it has) and verify it against trusted keys.

Verification is a whole-module check: a trusted key verifies when one of its signatures
covers a hash set whose *last* hash is the SHA-256 of every byte after the signature
section, exactly as those bytes are (the bytes that will run). The earlier hashes of a
set are running hashes taken at `signature_delimiter` sections: a module cut right after a
delimiter hashes to one of them, so accepting any hash of the set (as wasmsign2 does)
would pass a module missing its later sections. No partial verification is offered.
Work is bounded whatever the module claims: the sets that cover the module are found
once (`read_signatures`, which also tells a reader without keys which sets cover
nothing), each key tries the signatures naming its id first, every one of them (each entry names one
key, so the section's bounds, 16,384 entries, bound these checks whatever the number of
keys: junk entries naming a signer, which anyone relaying a module may add, must not use
up a cap before its real signature is reached), then those naming no key, of which at
most `MAX_CHECKS` Ed25519 verifications are made per call, over every key (64 sets of 256
signatures without a key id against 10,000 keys took 22.8 s when each key listed its
candidates again and the cap ended only its own loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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

__all__ = ["Signed", "Verification", "Signatures", "sign_module", "verify_module",
           "verify_signatures", "read_signatures", "shown_ids", "MAX_CHECKS"]

MAX_CHECKS = 1024
SHOWN_IDS = 8  # key ids named in one line; the rest are counted


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
            sets[index] = SignedHashes(signed.hashes, (*signed.signatures, entry), signed.kept)
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
    stopped: bool = field(default=False, compare=False)  # the cap ended the checks

    @property
    def ok(self) -> bool:
        """True when at least one trusted key verified the whole module."""
        return bool(self.verified)

    def describe(self) -> str:
        """One line naming the key ids found and wanted (at most `SHOWN_IDS` of each, the
        rest counted: a section may name 16,384, a key directory thousands)."""
        wanted = shown_ids(self.wanted)
        if self.error:
            return f"signature unreadable ({self.error}); trusted key ids: {wanted}"
        if not self.signed:
            return f"module is not signed; trusted key ids: {wanted}"
        found = shown_ids(self.found)
        if self.ok:
            return f"signed by trusted key id {shown_ids(k.key_id for k in self.verified)}"
        limit = f" (stopped at {MAX_CHECKS} signature checks: give each signature its " \
            "key id, or trust fewer keys)" if self.stopped else ""
        return (f"no valid signature by a trusted key{limit}: key ids found {found}; "
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


def shown_ids(ids: Iterable[bytes | str | None]) -> str:
    """Key ids (bytes, or hex already) for one line: the first `SHOWN_IDS`, then how many
    more."""
    every = ["(no key id)" if key_id is None else key_id if isinstance(key_id, str)
             else key_id.hex() for key_id in ids]
    more = len(every) - SHOWN_IDS
    return ", ".join(every[:SHOWN_IDS]) + (f" and {more:,} more" if more > 0 else "") or "none"


@dataclass(frozen=True)
class Signatures:
    """A module's signature section read against the module's own bytes, no key needed:
    `section` (None: no signature section, or `error` says why it cannot be read);
    `covering`, its sets whose last hash is that of the module as it is (what a trusted
    key can verify)."""

    section: SignatureData | None = None
    covering: tuple[SignedHashes, ...] = ()
    error: str | None = None

    @property
    def sets(self) -> tuple[SignedHashes, ...]:
        """Every set, as the section holds them."""
        return () if self.section is None else self.section.sets

    @property
    def stale(self) -> tuple[SignedHashes, ...]:
        """Sets over other bytes than this module's (forged, or from another build): no
        key verifies them for it."""
        return tuple(s for s in self.sets if not any(s is c for c in self.covering))


def read_signatures(data: bytes) -> Signatures:
    """The module's signature sets, which of them cover it, or why they cannot be read
    (never raising)."""
    try:
        signature, rest = split(data)
    except (MalformedModule, SignatureFormatError) as exc:
        return Signatures(error=str(exc))
    if signature is None:
        return Signatures()
    digest = content_hash(data, rest)
    return Signatures(signature, tuple(s for s in signature.sets if _covers_all(s, digest)))


def _covers_all(signed: SignedHashes, digest: bytes) -> bool:
    """Whether the set's final hash (the one taken over every section) is `digest`."""
    return bool(signed.hashes) and signed.hashes[-1] == digest


def verify_module(data: bytes, keys: Sequence[PublicKey]) -> Verification:
    """Which of `keys` signed the whole module. Never raises for bad input."""
    return verify_signatures(read_signatures(data), keys)


def verify_signatures(read: Signatures, keys: Sequence[PublicKey]) -> Verification:
    """Which of `keys` signed the whole module whose signatures `read_signatures` read
    (a caller holding that reading verifies the same bytes, never a second read)."""
    wanted = tuple(dict.fromkeys(k.key_id for k in keys))
    if read.error is not None:
        return Verification(False, wanted=wanted, error=read.error)
    if read.section is None:
        return Verification(False, wanted=wanted)
    found = tuple(dict.fromkeys(e.key_id for s in read.sets for e in s.signatures))
    # Each covering signature once, by the key id it names (None: any key may try it).
    named: dict[bytes | None, list[tuple[bytes, SignatureEntry]]] = {}
    for signed in read.covering:
        signed_message = message(signed.hashes)
        for entry in signed.signatures:
            named.setdefault(entry.key_id, []).append((signed_message, entry))
    anyone = named.pop(None, [])
    unique = list({k.raw: k for k in keys}.values())  # a key listed twice is tried once
    verified: list[PublicKey] = []
    checks = 0
    # Every entry naming a trusted key is tried, by that key alone: each is checked at
    # most once whatever the number of keys, so the section's own bounds (16,384 entries)
    # bound the work, and junk entries naming a signer cannot use up a cap before its
    # real signature is reached (nobody signs the signature section itself).
    untried: list[PublicKey] = []
    for key in unique:
        for signed_message, entry in named.get(key.key_id, ()):
            checks += 1
            if key.verify(entry.signature, signed_message):
                verified.append(key)
                break
        else:
            untried.append(key)
    # Entries without a key id, tried by every other key: that product is capped.
    anonymous = 0
    for key in untried:
        if anonymous >= MAX_CHECKS:
            break
        for signed_message, entry in anyone:
            if anonymous >= MAX_CHECKS:
                break
            anonymous += 1
            if key.verify(entry.signature, signed_message):
                verified.append(key)
                break
    return Verification(True, found, wanted, tuple(verified), checks=checks + anonymous,
                        stopped=anonymous >= MAX_CHECKS)

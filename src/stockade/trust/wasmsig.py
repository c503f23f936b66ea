"""Embedded module signatures in the format of wasmsign2 (WebAssembly tool-conventions
`Signatures.md`), byte for byte.

A signed module's first section is a custom section named `signature`::

    payload  = varuint(spec version = 1) varuint(content type = 1) varuint(hash fn = 1)
               varuint(#sets) { varuint(len) signed_hashes }*
    signed_hashes = varuint(#hashes) { 32-byte SHA-256 }* varuint(#sigs) { varuint(len) sig }*
    sig      = varuint(len) key_id (0: none)  byte(alg = 1, Ed25519)  varuint(len) signature

(the nested length prefixes before each set and each signature are what wasmsign2 writes;
the specification's table omits them). A signature is Ed25519 over
`"wasmsig" 0x01 0x01 0x01 ‖ hash₁ ‖ … ‖ hashₙ`, where the hashes are running SHA-256 values
of every section after the signature section, re-serialised with minimal LEB128 lengths,
taken after each `signature_delimiter` section and at the end. Several signers over the
same hashes share one set. Parsing is bounded as wasmsign2 bounds it (64 sets or hashes,
256 signatures).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..binary import CUSTOM, MAGIC, Cursor, MalformedModule, Section, encode_leb, sections

__all__ = [
    "SIGNATURE_SECTION", "DELIMITER_SECTION", "SignatureEntry", "SignedHashes",
    "SignatureData", "SignatureFormatError", "split", "section_hashes", "message",
    "content_hash", "encode_section", "assemble",
]

SIGNATURE_SECTION = "signature"
DELIMITER_SECTION = "signature_delimiter"
DOMAIN = b"wasmsig"
VERSION = CONTENT_TYPE = HASH_SHA256 = ED25519 = 0x01
MAX_HASHES = 64
MAX_SIGNATURES = 256
HASH_SIZE = 32


class SignatureFormatError(ValueError):
    """A `signature` section that is not in the format (the message says where)."""


def _slice(data: bytes) -> bytes:
    return encode_leb(len(data)) + data


@dataclass(frozen=True)
class SignatureEntry:
    """One signature over a set of hashes: the signer's key id (None when absent)."""

    key_id: bytes | None
    signature: bytes
    algorithm: int = ED25519

    def serialize(self) -> bytes:
        """The entry as wasmsign2 writes it (without its outer length)."""
        return _slice(self.key_id or b"") + bytes([self.algorithm]) + _slice(self.signature)


@dataclass(frozen=True)
class SignedHashes:
    """Hashes of a module's section runs and the signatures over them: `signatures`, the
    Ed25519 entries read; `kept`, the bytes of entries not read (another algorithm's, or
    not in the format), written back as they were so that re-signing drops nobody's."""

    hashes: tuple[bytes, ...]
    signatures: tuple[SignatureEntry, ...]
    kept: tuple[bytes, ...] = ()

    def serialize(self) -> bytes:
        """The set as wasmsign2 writes it (without its outer length)."""
        out = bytearray(encode_leb(len(self.hashes)))
        for digest in self.hashes:
            out += digest
        out += encode_leb(len(self.signatures) + len(self.kept))
        for entry in self.signatures:
            out += _slice(entry.serialize())
        for raw in self.kept:
            out += _slice(raw)
        return bytes(out)


@dataclass(frozen=True)
class SignatureData:
    """The payload of a `signature` section."""

    sets: tuple[SignedHashes, ...]

    def serialize(self) -> bytes:
        """The payload bytes."""
        out = bytearray(encode_leb(VERSION) + encode_leb(CONTENT_TYPE) + encode_leb(HASH_SHA256))
        out += encode_leb(len(self.sets))
        for signed in self.sets:
            out += _slice(signed.serialize())
        return bytes(out)

    def section(self) -> bytes:
        """The whole custom section (id, size, name, payload)."""
        return encode_section(CUSTOM, _slice(SIGNATURE_SECTION.encode()) + self.serialize())

    @classmethod
    def parse(cls, data: bytes, start: int, end: int) -> SignatureData:
        """Parse a `signature` section payload. Raises SignatureFormatError."""
        try:
            return cls(_parse(Cursor(data, start, end)))
        except MalformedModule as exc:
            raise SignatureFormatError(f"signature section: {exc}") from None


def _small(cursor: Cursor, what: str) -> int:
    value = cursor.byte()
    if value & 0x80:
        raise SignatureFormatError(f"signature section: {what} at offset {cursor.pos - 1}")
    return value


def _parse(cursor: Cursor) -> tuple[SignedHashes, ...]:
    if _small(cursor, "version") != VERSION:
        raise SignatureFormatError("signature section: unsupported specification version")
    if _small(cursor, "content type") != CONTENT_TYPE:
        raise SignatureFormatError("signature section: unsupported content type")
    if _small(cursor, "hash function") != HASH_SHA256:
        raise SignatureFormatError("signature section: unsupported hash function")
    count = cursor.leb()
    if count > MAX_HASHES:
        raise SignatureFormatError(f"signature section: {count} hash sets (at most {MAX_HASHES})")
    sets = []
    for _ in range(count):
        length = cursor.leb()
        inner = Cursor(cursor.data, cursor.pos, cursor.pos + length)
        cursor.skip(length)  # refuses a set overrunning the section
        sets.append(_signed_hashes(inner))
    return tuple(sets)


def _signed_hashes(cursor: Cursor) -> SignedHashes:
    count = cursor.leb()
    if count > MAX_HASHES:
        raise SignatureFormatError(f"signature section: {count} hashes (at most {MAX_HASHES})")
    hashes = tuple(cursor.bytes(HASH_SIZE) for _ in range(count))
    count = cursor.leb()
    if count > MAX_SIGNATURES:
        raise SignatureFormatError(
            f"signature section: {count} signatures (at most {MAX_SIGNATURES})")
    entries, kept = [], []
    for _ in range(count):
        length = cursor.leb()
        start = cursor.pos
        entry = Cursor(cursor.data, start, start + length)
        cursor.skip(length)
        try:
            key_id = entry.bytes(entry.leb())
            algorithm = entry.byte()
            signature = entry.bytes(entry.leb())
        except MalformedModule:
            algorithm = -1
        if algorithm == ED25519:
            entries.append(SignatureEntry(key_id or None, signature, algorithm))
        else:  # skipped as wasmsign2 skips them, but kept for whoever reads them
            kept.append(bytes(cursor.data[start:start + length]))
    return SignedHashes(hashes, tuple(entries), tuple(kept))


def encode_section(section_id: int, payload: bytes) -> bytes:
    """A section with a minimal LEB128 size, as wasmsign2 re-serialises every section."""
    return bytes([section_id]) + encode_leb(len(payload)) + payload


def _canonical(data: bytes, section: Section) -> bytes:
    if section.id != CUSTOM:
        return encode_section(section.id, data[section.start:section.end])
    header = Cursor(data, section.offset + 1, section.end)
    header.leb()
    name = header.bytes(header.leb())
    return encode_section(CUSTOM, _slice(name) + data[section.start:section.end])


def split(data: bytes) -> tuple[SignatureData | None, list[Section]]:
    """The module's signature data (None when its first section is not `signature`) and
    its other sections. Raises MalformedModule or SignatureFormatError."""
    found = list(sections(data))
    if found and found[0].id == CUSTOM and found[0].name == SIGNATURE_SECTION:
        return SignatureData.parse(data, found[0].start, found[0].end), found[1:]
    return None, found


def section_hashes(data: bytes, rest: Iterable[Section]) -> tuple[list[bytes], bytes]:
    """The hashes a signer signs (running SHA-256 after each delimiter and at the end)
    and the module bytes they cover, re-serialised as wasmsign2 writes them. A later
    `signature` section is dropped, as wasmsign2 drops it."""
    hasher = hashlib.sha256()
    hashes: list[bytes] = []
    body = bytearray()
    last_was_delimiter = False
    for section in rest:
        if section.id == CUSTOM and section.name == SIGNATURE_SECTION:
            continue
        encoded = _canonical(data, section)
        hasher.update(encoded)
        body += encoded
        last_was_delimiter = section.id == CUSTOM and section.name == DELIMITER_SECTION
        if last_was_delimiter:
            hashes.append(hasher.digest())
    if not last_was_delimiter:
        hashes.append(hasher.digest())
    return hashes, bytes(body)


def content_hash(data: bytes, rest: list[Section]) -> bytes:
    """SHA-256 of the module bytes after the signature section, exactly as they are (what
    a verifier compares with the signed hashes: the bytes that will run)."""
    start = rest[0].offset if rest else len(data)
    return hashlib.sha256(memoryview(data)[start:]).digest()


def message(hashes: Iterable[bytes]) -> bytes:
    """The bytes an Ed25519 signature covers."""
    return DOMAIN + bytes([VERSION, CONTENT_TYPE, HASH_SHA256]) + b"".join(hashes)


def assemble(signature: SignatureData, body: bytes) -> bytes:
    """A signed module: header, signature section, then the (re-serialised) sections."""
    return MAGIC + signature.section() + body

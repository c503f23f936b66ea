"""Make the wasmsign2 test vectors in this directory (run from the repository root:
`python tests/trust/vectors/make_vectors.py`).

wasmsign2 (github.com/wasm-signatures/wasmsign2, commit 8223bece7dde42d9fb7778cb27c51a99f2eeaa9a)
could not be built on the machine these vectors were made on (crates.io unreachable), so
this script re-does, step by step and independently of Stockade's own code, what its
`wasmsign2 sign` does, read from its sources:

- `wasm_module/mod.rs`: `Module::deserialize` reads the 8-byte header, then sections as
  `get7(id)`, `get32(len)`, payload; a custom section's payload is split into
  `get32(name_len)`, name, data. `Section::serialize` writes `put(id)`, `put(len)`,
  payload (a custom section's payload re-built as `put(name_len)`, name, data): every
  LEB128 re-encoded minimally by `varint::put`.
- `signature/multi.rs` `SecretKey::sign_multi(module, key_id, detached=false,
  allow_extensions=false)`: an empty placeholder first, then every section except a
  `signature` section (the first one's data kept as `previous_signature_data`), each
  serialised into one running SHA-256; a hash is taken after each
  `signature_delimiter` section and at the end unless the last one was a delimiter.
  `build_header_section`: msg = "wasmsig" ‖ 01 ‖ 01 ‖ 01 ‖ hashes; Ed25519 (RFC 8032,
  deterministic) over msg; the new signature joins a previous set with equal hashes
  (refused if identical), else a new set is appended.
- `signature/sig_sections.rs` `SignatureData::serialize`: put(1) put(1) put(1)
  put(#sets) then put_slice(set) for each; a set is put(#hashes) hashes put(#sigs) then
  put_slice(sig); a sig is put_slice(key_id) (or put(0)), the byte 0x01, put_slice(sig).
- `signature/keys.rs`: `attach_default_key_id` = HMAC-SHA256(key = the 32-byte public
  key, message = "key_id")[0..12] (hmac_sha256::HMAC::mac(input, key)); `wasmsign2 sign`
  stores a key id only when given the public key (`-P`), as `with_key_id` here.

Outputs: `*.wasm` signed modules and `vectors.json` (inputs, seeds, key ids, messages).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).parent


def put(v: int) -> bytes:  # varint::put
    out = bytearray()
    while True:
        b = v & 0x7F
        if v > 0x7F:
            b |= 0x80
        out.append(b)
        v >>= 7
        if v == 0:
            return bytes(out)


def put_slice(b: bytes) -> bytes:
    return put(len(b)) + b


def get32(r: io.BytesIO) -> int:  # varint::get32
    v = 0
    for i in range(5):
        byte = r.read(1)[0]
        v |= (byte & 0x7F) << (i * 7)
        if not byte & 0x80:
            return v
    raise ValueError("varint")


def deserialize(module: bytes) -> tuple[bytes, list[tuple[int, bytes, bytes]]]:
    """(header, [(id, custom name or b"", payload)])."""
    r = io.BytesIO(module)
    header = r.read(8)
    sections = []
    while True:
        first = r.read(1)
        if not first:
            return header, sections
        sid = first[0]
        payload = r.read(get32(r))
        if sid == 0:
            pr = io.BytesIO(payload)
            name = pr.read(get32(pr))
            sections.append((0, name, pr.read()))
        else:
            sections.append((sid, b"", payload))


def serialize_section(sid: int, name: bytes, payload: bytes) -> bytes:
    if sid == 0:
        payload = put_slice(name) + payload
    return put(sid) + put(len(payload)) + payload


def parse_previous(payload: bytes) -> list[tuple[list[bytes], list[bytes]]]:
    """SignatureData::deserialize: [(hashes, serialized signature entries)]."""
    r = io.BytesIO(payload)
    assert r.read(3) == b"\x01\x01\x01"
    sets = []
    for _ in range(get32(r)):
        sr = io.BytesIO(r.read(get32(r)))
        hashes = [sr.read(32) for _ in range(get32(sr))]
        sigs = [sr.read(get32(sr)) for _ in range(get32(sr))]
        sets.append((hashes, sigs))
    return sets


def key_id(public: bytes) -> bytes:
    return hmac.new(public, b"key_id", hashlib.sha256).digest()[:12]


def sign_multi(module: bytes, seed: bytes, with_key_id: bool) -> tuple[bytes, bytes]:
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header, sections = deserialize(module)
    hasher = hashlib.sha256()
    hashes: list[bytes] = []
    out: list[bytes] = []
    previous = None
    last_was_delimiter = False
    for idx, (sid, name, payload) in enumerate(sections):
        if sid == 0 and name == b"signature":
            if idx == 0:
                previous = parse_previous(payload)
            continue
        encoded = serialize_section(sid, name, payload)
        hasher.update(encoded)
        out.append(encoded)
        last_was_delimiter = sid == 0 and name == b"signature_delimiter"
        if last_was_delimiter:
            hashes.append(hasher.copy().digest())
    if not last_was_delimiter:
        hashes.append(hasher.copy().digest())
    msg = b"wasmsig" + bytes([1, 1, 1]) + b"".join(hashes)
    signature = sk.sign(msg)
    kid = key_id(pk) if with_key_id else None
    entry = (put_slice(kid) if kid else put(0)) + b"\x01" + put_slice(signature)
    sets = previous or []
    for hs, sigs in sets:
        if hs == hashes:
            assert entry not in sigs, "DuplicateSignature"
            sigs.append(entry)
            break
    else:
        sets.append((hashes, [entry]))
    data = put(1) + put(1) + put(1) + put(len(sets))
    for hs, sigs in sets:
        body = put(len(hs)) + b"".join(hs) + put(len(sigs)) + b"".join(put_slice(s) for s in sigs)
        data += put_slice(body)
    return header + serialize_section(0, b"signature", data) + b"".join(out), msg


def sample_module() -> bytes:
    """A small valid module: type, function, export, code, a custom section whose sizes
    are padded LEB128s (re-encoded minimally by the signer), and a name section."""
    def sec(sid: int, payload: bytes) -> bytes:
        return bytes([sid]) + put(len(payload)) + payload

    padded_custom = b"\x00" + b"\x8c\x80\x80\x80\x00" + b"\x84\x80\x00" + b"note" + b"hello"
    return (b"\0asm\x01\0\0\0" + sec(1, b"\x01\x60\x00\x00") + sec(3, b"\x01\x00")
            + sec(7, b"\x01\x06_start\x00\x00") + sec(10, b"\x01\x02\x00\x0b")
            + padded_custom + sec(0, put_slice(b"name") + b"\x00\x04\x03abc"))


def delimited_module() -> bytes:
    def sec(sid: int, payload: bytes) -> bytes:
        return bytes([sid]) + put(len(payload)) + payload

    delimiter = sec(0, put_slice(b"signature_delimiter") + bytes(range(16)))
    return (b"\0asm\x01\0\0\0" + sec(1, b"\x01\x60\x00\x00") + sec(3, b"\x01\x00")
            + delimiter + sec(10, b"\x01\x02\x00\x0b"))


def main() -> None:
    seed_a, seed_b = bytes(range(32)), bytes(range(32, 64))
    vectors = []
    module = sample_module()
    (HERE / "module.wasm").write_bytes(module)
    cases = [
        ("signed_a.wasm", "module.wasm", seed_a, True),
        ("signed_a_no_key_id.wasm", "module.wasm", seed_a, False),
        ("signed_a_then_b.wasm", "signed_a.wasm", seed_b, True),
    ]
    (HERE / "delimited.wasm").write_bytes(delimited_module())
    cases.append(("delimited_signed_a.wasm", "delimited.wasm", seed_a, True))
    for output, source, seed, with_kid in cases:
        signed, msg = sign_multi((HERE / source).read_bytes(), seed, with_kid)
        (HERE / output).write_bytes(signed)
        pk = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        vectors.append({"output": output, "input": source, "seed": seed.hex(),
                        "public_key": pk.hex(), "key_id": key_id(pk).hex(),
                        "with_key_id": with_kid, "message": msg.hex()})
    (HERE / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()

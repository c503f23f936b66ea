"""What a trusted key file may hold: no small-order or non-canonical Ed25519 point (the
identity point as a "key" accepted R = identity, S = 0 as its signature of any module),
and one PEM key per file (a second block, or `ssh-ed25519` lines after one, or an Ed25519
key after a cosign key, were dropped without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from stockade.trust import KeyFileError, load_public_keys, verify_module
from stockade.trust.cosignkeys import parse_image_key
from stockade.trust.keys import PublicKey, SecretKey, parse_public_keys
from stockade.trust.wasmsig import (
    SignatureData,
    SignatureEntry,
    SignedHashes,
    assemble,
    section_hashes,
    split,
)
from tests.conftest import guest, refused, stockade

P = 2**255 - 19
# y of the eight points of order dividing 8 (0, 1, p-1 and the two of order 8)
ORDER_8 = (0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
           0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7)
WEAK_Y = (0, 1, P - 1, *ORDER_8)


def _encodings() -> list[bytes]:
    """Every encoding of a small-order point (either sign bit) and of y >= p."""
    found = []
    for y in (*WEAK_Y, *range(P, 2**255)):
        for sign in (0, 1 << 255):
            found.append((y | sign).to_bytes(32, "little"))
    return found


def _pem(raw: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("raw", _encodings(), ids=lambda raw: raw.hex()[:8] + raw.hex()[-2:])
def test_small_order_and_non_canonical_keys_are_refused(raw: bytes) -> None:
    for data in (b"\x01" + raw, _pem(raw)):
        with pytest.raises(KeyFileError, match="small-order or non-canonical"):
            parse_public_keys(data, "weak.pub")
    with pytest.raises(KeyFileError, match="small-order or non-canonical"):
        PublicKey(raw)


def test_the_identity_key_no_longer_accepts_a_forged_module(tmp_path: Path) -> None:
    data = guest("hello.wasm").read_bytes()
    _, rest = split(data)
    hashes, body = section_hashes(data, rest)
    forged_signature = bytes([1]) + bytes(31) + bytes(32)  # R = identity, S = 0
    forged = tmp_path / "forged.wasm"
    forged.write_bytes(assemble(SignatureData((SignedHashes(
        tuple(hashes), (SignatureEntry(None, forged_signature),)),)), body))
    weak = tmp_path / "weak.pub"
    weak.write_bytes(bytes([1, 1]) + bytes(31))
    refused(stockade("run", "--trust-key", str(weak), "--require-signature", str(forged)),
            str(weak), "small-order")


def test_an_ordinary_key_still_verifies() -> None:
    secret = SecretKey(bytes(range(32)))
    from stockade.trust import sign_module

    data = sign_module(guest("hello.wasm").read_bytes(), secret).module
    [key] = parse_public_keys(b"\x01" + secret.public.raw, "ok.pub")
    assert verify_module(data, [key]).ok


def _cosign_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _ssh(secret: SecretKey) -> bytes:
    return secret._key().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"


A, B = SecretKey(bytes([1]) * 32), SecretKey(bytes([2]) * 32)
MIXED = {
    "two Ed25519 PEM blocks": A.public.pem() + B.public.pem(),
    "a PEM block then ssh-ed25519 lines": A.public.pem() + _ssh(B),
    "a cosign PEM then an Ed25519 PEM": _cosign_pem() + A.public.pem(),
    "an Ed25519 PEM then a cosign PEM": A.public.pem() + _cosign_pem(),
}


@pytest.mark.parametrize("name", list(MIXED))
def test_a_file_of_several_keys_is_refused_not_read_in_part(name: str, tmp_path: Path) -> None:
    data = MIXED[name]
    with pytest.raises(KeyFileError, match="one PEM key per file"):
        parse_public_keys(data, "mixed.pub")
    with pytest.raises(KeyFileError, match="one PEM key per file"):
        parse_image_key(data, "mixed.pub")
    path = tmp_path / "mixed.pub"
    path.write_bytes(data)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="one PEM key per file"):
        load_public_keys(path)
    refused(stockade("run", "--trust-key", str(path), "--require-signature",
                     str(guest("hello.wasm"))), str(path), "one PEM key per file")


def test_one_pem_key_with_blank_lines_around_it_is_read() -> None:
    [key] = parse_public_keys(b"\n" + A.public.pem() + b"\n\n", "one.pub")
    assert key.raw == A.public.raw
    assert parse_image_key(b"\n" + _cosign_pem() + b"\n", "cosign.pub") is not None

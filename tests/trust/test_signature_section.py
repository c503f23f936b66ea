"""The signature section itself is signed by nobody: whoever relays a signed module may
add entries to it. Junk entries naming the trusted key's id, in sets of their own or in
the signer's set, ran verification into its cap on checks, and the refusal blamed the
signer; `sign` dropped the entries it could not read and those of other algorithms."""

from __future__ import annotations

import os
import time

from stockade.binary import encode_leb
from stockade.trust import sign_module, verify_module
from stockade.trust.keys import SecretKey
from stockade.trust.signing import MAX_CHECKS
from stockade.trust.wasmsig import SignatureData, SignatureEntry, SignedHashes, split
from tests.conftest import guest

SIGNER = SecretKey(bytes(range(32)))
OTHER = SecretKey(bytes([9]) * 32)


def _relayed(sets: tuple[SignedHashes, ...], data: bytes) -> bytes:
    """`data` with its signature section replaced by `sets`."""
    _, rest = split(data)
    return data[:8] + SignatureData(sets).section() + data[rest[0].offset:]


def _junk(key_id: bytes | None, count: int) -> tuple[SignatureEntry, ...]:
    return tuple(SignatureEntry(key_id, os.urandom(64)) for _ in range(count))


def test_junk_entries_naming_the_signer_cannot_hide_its_signature() -> None:
    signed = sign_module(guest("hello.wasm").read_bytes(), SIGNER).module
    good = split(signed)[0].sets[0]  # type: ignore[union-attr]
    key_id = SIGNER.public.key_id
    # the review's padding: covering sets of junk, the signer's set last
    padded = _relayed(tuple(SignedHashes(good.hashes, _junk(key_id, 256)) for _ in range(4))
                      + (good,), signed)
    verification = verify_module(padded, [SIGNER.public, OTHER.public])
    assert verification.ok, verification.describe()
    # and junk put inside the signer's own set, before its signature, in 64 sets
    stuffed = SignedHashes(good.hashes, _junk(key_id, 255) + good.signatures)
    padded = _relayed(tuple(SignedHashes(good.hashes, _junk(key_id, 256)) for _ in range(63))
                      + (stuffed,), signed)
    started = time.process_time()
    verification = verify_module(padded, [SIGNER.public])
    assert verification.ok, verification.describe()
    assert time.process_time() - started < 10  # 16,384 checks at most, whatever the keys


def test_entries_without_a_key_id_are_tried_after_those_naming_a_trusted_key() -> None:
    signed = sign_module(guest("hello.wasm").read_bytes(), SIGNER).module
    good = split(signed)[0].sets[0]  # type: ignore[union-attr]
    anonymous = tuple(SignedHashes(good.hashes, _junk(None, 256)) for _ in range(8))
    verification = verify_module(_relayed((*anonymous, good), signed),
                                 [OTHER.public, SIGNER.public])
    assert verification.ok, verification.describe()
    # where no named entry verifies, the cap still bounds the anonymous ones
    verification = verify_module(_relayed(anonymous, signed), [OTHER.public, SIGNER.public])
    assert not verification.ok and verification.checks == MAX_CHECKS
    assert f"stopped at {MAX_CHECKS} signature checks" in verification.describe()


def test_sign_keeps_the_entries_it_does_not_read() -> None:
    signed = sign_module(guest("hello.wasm").read_bytes(), SIGNER).module
    good = split(signed)[0].sets[0]  # type: ignore[union-attr]
    # another algorithm's entry (id 2), and one cut short (its signature length overruns)
    other_algorithm = b"\x04abcd" + b"\x02" + b"\x03xyz"
    unreadable = b"\x04abcd\x01\x7f" + b"short"
    raw_set = (encode_leb(len(good.hashes)) + b"".join(good.hashes) + encode_leb(3)
               + encode_leb(len(good.signatures[0].serialize()))
               + good.signatures[0].serialize()
               + encode_leb(len(other_algorithm)) + other_algorithm
               + encode_leb(len(unreadable)) + unreadable)
    payload = bytes([1, 1, 1]) + encode_leb(1) + encode_leb(len(raw_set)) + raw_set
    section = b"\x00" + encode_leb(len(payload) + 10) + b"\x09signature" + payload
    _, rest = split(signed)
    relayed = signed[:8] + section + signed[rest[0].offset:]
    assert verify_module(relayed, [SIGNER.public]).ok
    again = sign_module(relayed, OTHER).module
    assert other_algorithm in again and unreadable in again
    assert verify_module(again, [SIGNER.public]).ok and verify_module(again, [OTHER.public]).ok
    [kept] = split(again)[0].sets  # type: ignore[union-attr]
    assert len(kept.signatures) == 2  # the two Ed25519 entries; the others kept as bytes

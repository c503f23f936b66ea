"""Attacks on the two seal forms by someone who can write artifacts but not read the
key: swapping one form's magic for the other's, payloads on either side of `LARGE`,
truncated or extended trailers, index tags in another spelling or of another purpose."""

from __future__ import annotations

import pytest

from stockade.engine.seal import (
    LARGE,
    MAGIC,
    SHA256_MAGIC,
    TRAILER_SIZE,
    SealError,
    host_key,
    resealable,
    seal,
    tag,
    tag_matches,
    unseal,
)

from .test_cache_trust import fingerprint

_OTHER = {MAGIC: SHA256_MAGIC, SHA256_MAGIC: MAGIC}


@pytest.mark.parametrize("size", [LARGE - 1, LARGE, LARGE + 1])
def test_a_seal_relabelled_as_the_other_form_does_not_verify(size: int) -> None:
    key = host_key()
    payload = bytes(size)
    sealed = payload + seal(payload, fingerprint(), "cache:x", key)
    magic = sealed[-TRAILER_SIZE:][:len(MAGIC)]
    assert magic == (MAGIC if size <= LARGE else SHA256_MAGIC)
    relabelled = payload + _OTHER[magic] + sealed[-TRAILER_SIZE + len(MAGIC):]
    assert resealable(relabelled)  # it would be sealed again if it verified...
    with pytest.raises(SealError, match="MAC does not verify"):
        unseal(relabelled, fingerprint(), "cache:x", key)  # ...and it does not


@pytest.mark.parametrize("size", [LARGE, LARGE + 1])
def test_moving_the_boundary_by_a_byte_breaks_the_mac(size: int) -> None:
    key = host_key()
    payload = bytes(size)
    sealed = payload + seal(payload, fingerprint(), "cache:x", key)
    for changed in (sealed[1:], b"\0" + sealed, sealed[:-1], sealed + b"\0",
                    sealed[:-TRAILER_SIZE - 1] + sealed[-TRAILER_SIZE:]):
        with pytest.raises(SealError):
            unseal(changed, fingerprint(), "cache:x", key)
    assert unseal(sealed, fingerprint(), "cache:x", key) == size


def test_index_tags_are_exact_in_either_form() -> None:
    key = host_key()
    good = tag(key, "stat", "facts", "sha")
    assert tag_matches(key, good, "stat", "facts", "sha")
    for found in (good.upper(), good[:-1], good[:32], good + "0", "", " " + good,
                  good.encode().hex(), tag(key, "stat", "facts", "sha2")):
        assert not tag_matches(key, found, "stat", "facts", "sha"), found
    # Parts are joined with NUL, so a part holding one could stand for two: the index's
    # parts are a path's identity facts (no NUL: a path cannot hold one) and a sha, so
    # this is the boundary the stat index relies on.
    assert tag(key, "stat", "a\0b", "c") == tag(key, "stat", "a", "b\0c")
    from pathlib import Path

    from stockade.engine.loader import file_ident
    with pytest.raises(ValueError):
        file_ident(Path("/tmp/a\0b"), Path("/").stat())

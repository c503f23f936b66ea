"""The two MACs of sealed artifacts: keyed BLAKE2b (`seal2`) up to `LARGE` bytes, HMAC-SHA256
(`seal1`, the only form before) above. Genuine `seal1` artifacts of small modules (made by
earlier versions) still load under the same key, and cache entries and index records are
sealed again in today's form; forged ones are refused and audited as before. The `seal1`
format is spelled out here, independently of the code under test."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from stockade.engine.cache import AotCache
from stockade.engine.config import EngineConfig
from stockade.engine.loader import file_ident
from stockade.engine.seal import (
    LARGE,
    TRAILER_SIZE,
    SealError,
    host_key,
    resealable,
    seal,
    unseal,
)
from stockade.policy import profile

from ..conftest import guest, stockade
from .elf import patch_functions
from .test_cache_trust import (
    HELLO,
    assert_sealed_and_private,
    cache,  # noqa: F401 - the fixture
    entry,
    fingerprint,
    plant,
    refusals,
    run_hello,
)

LEGACY_MAGIC = b"\0stockade-seal1\0"


def legacy_seal(payload: bytes, purpose: str, key: bytes, engine: str | None = None) -> bytes:
    """`payload` with the trailer Stockade wrote before `seal2`, for the `engine`
    fingerprint (default: the default profile's)."""
    tag = (engine or fingerprint()).encode()[:16].ljust(16, b"\0")
    mac = hmac.new(key, b"stockade-aot-v1\0" + purpose.encode() + b"\0" + tag + b"\0"
                   + payload, hashlib.sha256).digest()
    return payload + LEGACY_MAGIC + tag + mac


def legacy_tag(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(("stockade-tag-v1", *parts)).encode(),
                    hashlib.sha256).hexdigest()


def _hello_payload(root: Path) -> tuple[Path, bytes]:
    run_hello()
    target = entry(root)
    return target, target.read_bytes()[:-TRAILER_SIZE]


def test_seal2_is_keyed_and_bound_to_its_purpose() -> None:
    key = host_key()
    for payload, magic in ((b"payload", b"\0stockade-seal2\0"),
                           (bytes(LARGE + 1), LEGACY_MAGIC)):
        data = payload + seal(payload, fingerprint(), "cwasm", key)
        assert data[-TRAILER_SIZE:].startswith(magic)
        assert not resealable(data)
        assert unseal(data, fingerprint(), "cwasm", key) == len(payload)
        for purpose, other_key in (("cache:x", key), ("cwasm", bytes(32))):
            with pytest.raises(SealError, match="MAC does not verify"):
                unseal(data, fingerprint(), purpose, other_key)
    large = bytes(LARGE + 1)
    # The HMAC-SHA256 form is the same as earlier versions wrote:
    assert large + seal(large, fingerprint(), "cwasm", key) == legacy_seal(large, "cwasm", key)


def test_a_genuine_seal1_cache_entry_is_used_and_sealed_again(cache: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    target, payload = _hello_payload(cache)
    sha = target.name.removesuffix(".cwasm")
    plant(cache, legacy_seal(payload, f"cache:{sha}", host_key())).chmod(0o600)
    assert resealable(target.read_bytes())
    run_hello()
    assert refusals(tmp_path) == []  # an upgrade is not an attack
    assert not resealable(target.read_bytes())  # resealed as seal2...
    assert_sealed_and_private(target)  # ...private, and verifying
    assert target.read_bytes()[:-TRAILER_SIZE] == payload


def test_a_forged_seal1_cache_entry_is_refused_and_audited(cache: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    target, payload = _hello_payload(cache)
    sha = target.name.removesuffix(".cwasm")
    # A genuine seal1 MAC over the original, then the code changed: what an attacker with
    # write access to the cache, but not the key, can make.
    forged = legacy_seal(payload, f"cache:{sha}", host_key())
    plant(cache, patch_functions(forged[:-TRAILER_SIZE]) + forged[-TRAILER_SIZE:]).chmod(0o600)
    run_hello()
    found = refusals(tmp_path)
    assert [r["path"] for r in found] == [str(target)]
    assert "MAC does not verify" in found[0]["reason"]
    assert_sealed_and_private(target)


def test_a_seal1_cwasm_still_runs_and_a_changed_one_does_not(cache: Path,  # noqa: F811
                                                             tmp_path: Path) -> None:
    sealed = tmp_path / "app.cwasm"
    assert stockade("compile", str(guest("hello.wasm")), "-o", str(sealed)).returncode == 0
    payload = sealed.read_bytes()[:-TRAILER_SIZE]
    old = tmp_path / "old.cwasm"
    # `stockade compile` makes native code for the epochs configuration (no tripwire).
    epochs = EngineConfig.for_limits(profile("default").limits, tripwire=False).fingerprint()
    old.write_bytes(legacy_seal(payload, "cwasm", host_key(), epochs))
    done = stockade("run", "--allow-precompiled", str(old))
    assert (done.returncode, done.stdout.decode().strip()) == (0, HELLO)
    changed = tmp_path / "changed.cwasm"
    changed.write_bytes(patch_functions(payload) + old.read_bytes()[-TRAILER_SIZE:])
    done = stockade("run", "--allow-precompiled", str(changed))
    assert done.returncode == 126 and "MAC does not verify" in done.stderr.decode()


def test_a_seal1_stat_index_record_is_accepted_and_rewritten(cache: Path,  # noqa: F811
                                                            tmp_path: Path) -> None:
    run_hello()
    (record,) = (cache / "stat").iterdir()
    sha, current = record.read_text().split()
    # The tag covers ("stat", the path's identity facts, sha): the old form of the same.
    path = guest("hello.wasm")
    facts = file_ident(path, path.stat())
    record.write_text(f"{sha} {legacy_tag(host_key(), 'stat', facts, sha)}\n")
    assert AotCache(cache).recall(facts) == sha
    assert record.read_text().split() == [sha, current]  # today's tag written back
    record.write_text(f"{sha} {legacy_tag(bytes(32), 'stat', facts, sha)}\n")
    assert AotCache(cache).recall(facts) is None  # another key's old tag: refused
    assert any("tag does not verify" in r["reason"] for r in refusals(tmp_path))


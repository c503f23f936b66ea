"""The AoT cache as another user would attack it: planted entries, foreign owners, loose
modes, forged MACs and index records. Each is refused (deleted or moved aside), audited,
and the module is compiled again: the run's output stays the module's own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from stockade.engine import EngineConfig
from stockade.engine.seal import TRAILER_SIZE, host_key, key_path, unseal
from stockade.policy import profile

from ..conftest import guest, stockade
from .elf import patch_functions

HELLO = "Hello from a Stockade sandbox!"
NOBODY = 65534


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache for this test (the session's key)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(root))
    return root


def fingerprint() -> str:
    return EngineConfig.for_limits(profile("default").limits).fingerprint()


def entry(cache: Path, module: str = "hello.wasm") -> Path:
    sha = hashlib.sha256(guest(module).read_bytes()).hexdigest()
    return cache / fingerprint() / f"{sha}.cwasm"


def run_hello() -> None:
    done = stockade("run", str(guest("hello.wasm")))
    assert "Traceback" not in done.stderr.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == HELLO


def refusals(tmp_path: Path) -> list[dict[str, str]]:
    log = tmp_path / "state" / "audit.jsonl"
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in records if r["kind"] == "cache_refused"]


def assert_sealed_and_private(path: Path) -> None:
    info = path.stat()
    assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600
    data = path.read_bytes()
    sha = path.name.removesuffix(".cwasm")
    assert unseal(data, fingerprint(), f"cache:{sha}", host_key()) == len(data) - TRAILER_SIZE


def plant(cache: Path, data: bytes) -> Path:
    """Write `data` as hello's entry, as a writer of the cache would."""
    target = entry(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def test_a_fresh_cache_is_private(cache: Path) -> None:
    run_hello()
    for directory in (cache, cache / fingerprint(), cache / "stat"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert_sealed_and_private(entry(cache))
    for record in (cache / "stat").iterdir():
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
    key = key_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700


def test_a_second_run_is_served_from_the_cache(cache: Path, tmp_path: Path) -> None:
    run_hello()
    before = entry(cache).stat().st_ino
    run_hello()
    assert entry(cache).stat().st_ino == before  # verified and used, not rewritten
    assert refusals(tmp_path) == []


def _patched_entry(cache: Path) -> bytes:
    run_hello()
    return patch_functions(entry(cache).read_bytes())


@pytest.mark.parametrize("attack", ["unsealed", "bad-mac", "other-module", "other-key"])
def test_planted_code_is_refused_and_recompiled(cache: Path, tmp_path: Path, attack: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if attack == "unsealed":  # native code as plain wasmtime writes it
        data = patch_functions(_patched_entry(cache)[:-TRAILER_SIZE])
    elif attack == "bad-mac":  # a genuine entry whose code was then changed
        data = _patched_entry(cache)
    elif attack == "other-module":  # a genuine entry of another module, renamed
        stockade("run", str(guest("exitcode.wasm")))
        data = entry(cache, "exitcode.wasm").read_bytes()
    else:  # sealed by another host's key
        run_hello()
        data = entry(cache).read_bytes()
        monkeypatch.setenv("STOCKADE_CONFIG_DIR", str(tmp_path / "other-host"))
    target = plant(cache, data)
    target.chmod(0o600)
    run_hello()
    assert_sealed_and_private(target)
    found = [r["path"] for r in refusals(tmp_path)]
    assert str(target) in found
    # Another key also fails the stat index's tags: those records are refused as well.
    assert len(found) == (1 if attack != "other-key" else 2), found


@pytest.mark.parametrize("change", ["owner", "mode"])
def test_a_genuine_entry_another_user_could_write_is_refused(cache: Path, tmp_path: Path,
                                                            change: str) -> None:
    run_hello()
    target = entry(cache)
    if change == "owner":
        os.chown(target, NOBODY, NOBODY)
    else:
        target.chmod(0o664)
    run_hello()
    assert_sealed_and_private(target)
    found = refusals(tmp_path)
    assert len(found) == 1
    assert ("owned by uid 65534" if change == "owner" else "mode 0664") in found[0]["reason"]


def test_a_planted_symlink_entry_is_refused(cache: Path, tmp_path: Path) -> None:
    run_hello()
    target = entry(cache)
    elsewhere = tmp_path / "elsewhere.cwasm"
    shutil.copy(target, elsewhere)
    target.unlink()
    target.symlink_to(elsewhere)
    run_hello()
    assert not target.is_symlink()
    assert_sealed_and_private(target)
    assert len(refusals(tmp_path)) == 1


def test_a_group_writable_fingerprint_directory_is_moved_aside(cache: Path,
                                                              tmp_path: Path) -> None:
    planted = plant(cache, _patched_entry(cache))
    planted.parent.chmod(0o775)
    run_hello()
    assert stat.S_IMODE(planted.parent.stat().st_mode) == 0o700
    assert_sealed_and_private(planted)
    aside = [p for p in cache.iterdir() if p.name.startswith(".untrusted-")]
    assert len(aside) == 1
    found = refusals(tmp_path)
    assert any("lets others replace its files" in r["reason"] for r in found), found


def test_a_group_writable_root_is_tightened_and_still_checked(cache: Path,
                                                             tmp_path: Path) -> None:
    planted = plant(cache, _patched_entry(cache))
    cache.chmod(0o775)
    run_hello()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert_sealed_and_private(planted)
    reasons = [r["reason"] for r in refusals(tmp_path)]
    assert any("mode 0775" in r for r in reasons) and any("MAC" in r for r in reasons)


def test_a_cache_root_owned_by_another_user_is_not_used(cache: Path, tmp_path: Path) -> None:
    planted = plant(cache, _patched_entry(cache))
    for path in (cache, planted.parent, planted):
        os.chown(path, NOBODY, NOBODY)
    run_hello()  # compiled in memory
    assert planted.stat().st_uid == NOBODY  # not ours to touch
    assert any("owned by uid 65534" in r["reason"] for r in refusals(tmp_path))


def test_a_forged_stat_index_record_cannot_substitute_another_module(
        cache: Path, tmp_path: Path) -> None:
    """The index maps a path to a module digest: a record copied from another module's
    path (a replay of a genuine tag) or rewritten must not make hello run exitcode's code."""
    other = stockade("run", str(guest("exitcode.wasm")))
    assert other.returncode == 3
    records = {p.name: p.read_bytes() for p in (cache / "stat").iterdir()}
    run_hello()
    hello_records = [p for p in (cache / "stat").iterdir() if p.name not in records]
    assert len(hello_records) == 1
    replayed = next(iter(records.values()))
    exitcode_sha = replayed.split()[0].decode()
    for forged in (replayed, exitcode_sha.encode() + b"\n"):
        hello_records[0].write_bytes(forged)
        run_hello()
    found = refusals(tmp_path)
    assert len(found) == 2 and all("tag does not verify" in r["reason"] for r in found)


@pytest.mark.parametrize("change", ["mode", "owner"])
def test_an_exposed_key_is_refused(cache: Path, tmp_path: Path, change: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CONFIG_DIR", str(tmp_path / "config"))
    run_hello()
    key = key_path()
    if change == "mode":
        key.chmod(0o640)
    else:
        os.chown(key, NOBODY, NOBODY)
    run_hello()  # still runs: the cache is skipped, and that is audited
    assert any("key" in r["message"] for r in refusals(tmp_path))
    sealed = tmp_path / "app.cwasm"
    done = stockade("compile", str(guest("hello.wasm")), "-o", str(sealed))
    assert done.returncode == 125 and "key" in done.stderr.decode()
    assert not sealed.exists()


def test_rotating_the_key_revokes_every_entry(cache: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run_hello()
    sealed = tmp_path / "app.cwasm"
    assert stockade("compile", str(guest("hello.wasm")), "-o", str(sealed)).returncode == 0
    monkeypatch.setenv("STOCKADE_CONFIG_DIR", str(tmp_path / "rotated"))
    run_hello()
    assert_sealed_and_private(entry(cache))
    assert sorted(Path(r["path"]).parent.name for r in refusals(tmp_path)) == \
        sorted([fingerprint(), "stat"])  # the entry and its index record
    assert stockade("run", "--allow-precompiled", str(sealed)).returncode == 126

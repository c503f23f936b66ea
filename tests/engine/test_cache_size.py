"""The AoT cache keeps at most `STOCKADE_CACHE_MAX_BYTES` of compiled modules.

Every distinct module a host is handed, runnable or not, left a compiled copy about its
own size, and nothing removed one: a host running untrusted submissions filled its disk
(found by review). Past the cap the least recently used entries go until 1/16 of it is
free; a hit counts as a use, and an entry larger than the whole cap is not kept at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stockade.engine.cache import AotCache
from stockade.errors import UsageError

from ..conftest import guest, stockade

KEY = b"k" * 32
FINGERPRINT = "0123456789abcdef"
MiB = 1 << 20
UNIT = 900 * 1024  # three fit under 3 MiB less the 1/16 a trim leaves free; four do not


def _cache(root: Path, max_bytes: int) -> AotCache:
    return AotCache(root, key=lambda: KEY, max_bytes=max_bytes)


def _store(cache: AotCache, name: str, size: int, age: float = 0.0) -> Path:
    sha = name * 64
    stored = cache.store(FINGERPRINT, sha[:64], bytes(size))
    assert stored is not None
    if age:
        then = time.time() - age
        os.utime(stored, (then, then))
    return stored


def _entries(root: Path) -> set[str]:
    return {path.name[0] for path in root.glob("*/*.cwasm")}


def _total(root: Path) -> int:
    return sum(path.stat().st_size for path in root.glob("*/*.cwasm"))


def test_the_least_recently_used_entries_go_past_the_cap(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 3 * MiB)
    for age, name in ((400, "a"), (300, "b"), (200, "c")):
        _store(cache, name, UNIT, age)
    assert _entries(tmp_path) == {"a", "b", "c"}
    _store(cache, "d", UNIT)
    assert _entries(tmp_path) == {"b", "c", "d"}
    _store(cache, "e", 2 * MiB)
    assert "e" in _entries(tmp_path) and _total(tmp_path) <= 3 * MiB


def test_a_hit_counts_as_a_use(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 3 * MiB)
    _store(cache, "a", UNIT, age=7200)
    _store(cache, "b", UNIT, age=3600)
    with cache.open(FINGERPRINT, "a" * 64) as found:
        assert found is not None  # verified: its use is recorded
    _store(cache, "c", UNIT)
    _store(cache, "d", UNIT)
    assert _entries(tmp_path) == {"a", "c", "d"}


def test_an_entry_larger_than_the_cap_is_not_kept(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 2 * MiB)
    _store(cache, "a", MiB)
    assert cache.store(FINGERPRINT, "b" * 64, bytes(3 * MiB)) is None
    assert _entries(tmp_path) == {"a"}  # the others are not flushed for it


def test_what_is_not_an_entry_is_left_alone(tmp_path: Path) -> None:
    cache = _cache(tmp_path, MiB)
    other = tmp_path / "oci" / "blobs"
    other.mkdir(parents=True)
    (other / "layer").write_bytes(bytes(2 * MiB))  # the OCI store shares the directory
    _store(cache, "a", MiB // 2)
    _store(cache, "b", MiB // 2)
    assert (other / "layer").stat().st_size == 2 * MiB
    assert _total(tmp_path) <= MiB


def test_a_crashed_writers_leftovers_go_with_the_old_entries(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 4 * MiB)
    _store(cache, "a", MiB)
    part = tmp_path / FINGERPRINT / ("." + "c" * 64 + ".cwasm.123.abcd.part")
    part.write_bytes(bytes(MiB))
    old = time.time() - 7200
    os.utime(part, (old, old))
    fresh = tmp_path / FINGERPRINT / ("." + "d" * 64 + ".cwasm.124.abcd.part")
    fresh.write_bytes(bytes(MiB))  # another process may be writing it now
    _store(cache, "b", MiB)
    assert not part.exists() and fresh.exists()


@pytest.mark.parametrize("value", ["lots", "-1", "1KiB", "99999999999999999999999TiB"])
def test_a_malformed_cap_is_refused_when_the_cache_is_made(
        value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STOCKADE_CACHE_MAX_BYTES", value)
    with pytest.raises(UsageError, match="STOCKADE_CACHE_MAX_BYTES"):
        AotCache(tmp_path, key=lambda: KEY)


def _module_with_data(path: Path, seed: int, size: int = 300 * 1024) -> Path:
    """A module that exits at once, with `size` bytes of data of its own (compiled in)."""
    import wasmtime

    text = f"\\{seed + 1:02x}" * size
    path.write_bytes(wasmtime.wat2wasm(
        f'(module (memory {size // 65536 + 1}) (data (i32.const 0) "{text}") '
        '(func (export "_start")))'))
    return path


def test_a_host_handed_many_modules_keeps_its_cache_under_the_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(root))
    monkeypatch.setenv("STOCKADE_CACHE_MAX_BYTES", "1MiB")
    for seed in range(6):  # ~1.8 MiB compiled
        module = _module_with_data(tmp_path / f"m{seed}.wasm", seed)
        done = stockade("run", str(module))
        assert done.returncode == 0, done.stderr
        assert 0 < _total(root) <= MiB
    assert 0 < len(list(root.glob("*/*.cwasm"))) < 6
    done = stockade("run", str(guest("hello.wasm")))
    assert done.returncode == 0 and b"Hello" in done.stdout


def test_the_command_line_refuses_a_malformed_cap_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STOCKADE_CACHE_MAX_BYTES", "lots")
    done = stockade("run", str(guest("hello.wasm")))
    assert done.returncode == 125, done.stderr
    assert done.stderr.decode().count("\n") == 1
    assert "STOCKADE_CACHE_MAX_BYTES" in done.stderr.decode()


def _after_listing(monkeypatch: pytest.MonkeyPatch, directory: Path,
                   then: Callable[[], None]) -> None:
    """Call `then` once, right after `directory` is listed (by path or descriptor)."""
    listdir, scandir = os.listdir, os.scandir
    done: list[bool] = []

    def names(target: object) -> bool:
        if isinstance(target, int):
            try:
                return os.readlink(f"/proc/self/fd/{target}") == str(directory)
            except OSError:
                return False
        return str(target) == str(directory)

    def listed(target: Any = ".") -> Any:
        found = listdir(target)
        if names(target) and not done:
            done.append(True)
            then()
        return found

    def scanned(target: Any = ".") -> Any:
        found = list(scandir(target))
        if names(target) and not done:
            done.append(True)
            then()
        return _Entries(found)

    monkeypatch.setattr(os, "listdir", listed)
    monkeypatch.setattr(os, "scandir", scanned)


class _Entries(list):  # type: ignore[type-arg]
    """A listing `with os.scandir(...)` can use."""

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def test_a_folder_swapped_for_a_link_after_it_was_listed_leads_nowhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A scope's directories are its workers' to write: a worker that swapped a
    # fingerprint's folder for a link once the host had listed the root made the host's
    # trim delete files of its choosing elsewhere (found by review).
    root = tmp_path / "cache"
    cache = _cache(root, 2 * MiB)
    _store(cache, "a", MiB, age=600)
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("a" * 64 + ".cwasm", "report.cwasm", "download.part"):
        (victim / name).write_bytes(bytes(2 * MiB))
        os.utime(victim / name, (0, 0))  # the oldest there is

    def swap() -> None:
        (root / FINGERPRINT).rename(tmp_path / "moved")
        (root / FINGERPRINT).symlink_to(victim)

    _after_listing(monkeypatch, root, swap)
    (root / "fedcba9876543210").mkdir(mode=0o700)
    cache.store("fedcba9876543210", "b" * 64, bytes(MiB))
    assert sorted(path.name for path in victim.iterdir()) == sorted(
        ["a" * 64 + ".cwasm", "report.cwasm", "download.part"])


def test_an_entry_gone_while_trimming_does_not_end_the_trim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process trimming or evicting at the same moment: the entry it removed was
    # an error that ended this trim, and the cache stayed over its cap.
    cache = _cache(tmp_path, 3 * MiB)
    for age, name in ((400, "a"), (300, "b"), (200, "c")):
        _store(cache, name, UNIT, age)
    gone = _store(cache, "e", 1024, age=100)
    _after_listing(monkeypatch, gone.parent, gone.unlink)
    _store(cache, "d", UNIT)
    assert _total(tmp_path) <= 3 * MiB
    assert _entries(tmp_path) == {"b", "c", "d"}


def test_an_isolated_workers_cache_keeps_the_callers_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker's environment is an allow-list: its scope's cache kept the 2 GiB default
    # whatever the caller's cap said.
    from stockade import Policy
    from stockade.isolate import IsolatedSandbox

    root = tmp_path / "cache"
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(root))
    monkeypatch.setenv("STOCKADE_CACHE_MAX_BYTES", "1MiB")
    module = _module_with_data(tmp_path / "big.wasm", 7, size=1536 * 1024)
    with IsolatedSandbox(Policy.from_profile("default")) as sandbox:
        assert sandbox.run(module).ok
    kept = list(root.glob("**/*.cwasm"))
    assert all(path.stat().st_size <= MiB for path in kept), kept


def test_a_root_the_user_linked_is_trimmed_too(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    cache = _cache(tmp_path / "linked", 2 * MiB)
    for age, name in ((400, "a"), (300, "b"), (200, "c")):
        _store(cache, name, UNIT, age)
    assert _total(tmp_path / "real") <= 2 * MiB

"""The AoT cache's stat index (`stat/`, a record of about one 4 KiB block per file
identity) is bounded with the entries: nothing trimmed it, so a host handed many
distinct files grew it without end. Its records count against `STOCKADE_CACHE_MAX_BYTES`
and go least recently used first, walked by descriptors as the entries are."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stockade.engine.cache import AotCache

from .test_cache_size import FINGERPRINT, MiB, _after_listing, _cache, _store

SHA = "f" * 64


def _records(root: Path) -> set[str]:
    return {path.name for path in (root / "stat").iterdir()}


def _occupied(root: Path) -> int:
    files = [*root.glob("*/*.cwasm"), *(root / "stat").iterdir()]
    return sum(max(path.stat().st_size, path.stat().st_blocks * 512) for path in files)


def _age(paths: set[str], root: Path, seconds: float) -> None:
    then = time.time() - seconds
    for name in paths:
        os.utime(root / "stat" / name, (then, then))


def test_many_distinct_files_keep_the_index_under_the_cap(tmp_path: Path) -> None:
    cache = _cache(tmp_path, MiB)
    for number in range(600):  # ~2.3 MiB of records
        cache.remember(f"/srv/uploads/{number}:1:2:3:4:5", SHA)
    assert 0 < len(_records(tmp_path)) < 300
    assert _occupied(tmp_path) <= MiB


def test_entries_and_records_share_the_cap(tmp_path: Path) -> None:
    cache = _cache(tmp_path, 2 * MiB)
    _store(cache, "a", MiB, age=600)
    for number in range(300):  # ~1.2 MiB of records, all newer than the entry
        cache.remember(f"/srv/uploads/{number}:1:2:3:4:5", SHA)
    assert _occupied(tmp_path) <= 2 * MiB
    assert not (tmp_path / FINGERPRINT / f"{'a' * 64}.cwasm").exists()  # the oldest went


def test_a_recalled_record_outlives_older_ones(tmp_path: Path) -> None:
    cache = _cache(tmp_path, MiB)
    cache.remember("kept", SHA)
    cache.remember("dropped", SHA)
    first = _records(tmp_path)
    _age(first, tmp_path, 7200)
    for number in range(200):
        cache.remember(f"filler {number}", SHA)
    _age(_records(tmp_path) - first, tmp_path, 3600)
    assert cache.recall("kept") == SHA  # a use: its time is now
    for number in range(100):
        cache.remember(f"newer {number}", SHA)
    assert cache.recall("kept") == SHA
    assert cache.recall("dropped") is None


def test_an_index_folder_swapped_for_a_link_after_it_was_listed_leads_nowhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    cache = _cache(root, MiB)
    for number in range(200):
        cache.remember(f"file {number}", SHA)
    victim = tmp_path / "victim"
    victim.mkdir()
    names = [format(number, "032x") for number in range(100)]
    for name in names:
        (victim / name).write_bytes(b"precious")
        os.utime(victim / name, (0, 0))  # the oldest there is

    def swap() -> None:
        (root / "stat").rename(tmp_path / "moved")
        (root / "stat").symlink_to(victim)

    _after_listing(monkeypatch, root, swap)
    for number in range(100):
        cache.remember(f"more {number}", SHA)
    assert sorted(path.name for path in victim.iterdir()) == names


def test_a_crashed_record_writers_leftovers_go(tmp_path: Path) -> None:
    cache = _cache(tmp_path, MiB)
    cache.remember("one", SHA)
    part = tmp_path / "stat" / f".{'0' * 32}.123.abcd.part"
    part.write_bytes(b"x")
    os.utime(part, (0, 0))
    for number in range(300):
        cache.remember(f"file {number}", SHA)
    assert not part.exists()


def test_an_isolated_scope_bounds_its_index_too(tmp_path: Path) -> None:
    scope = AotCache(tmp_path, key=lambda: b"k" * 32, max_bytes=MiB).scope("isolated")
    for number in range(400):
        scope.remember(f"file {number}", SHA)
    assert len(list((scope.root / "stat").iterdir())) < 300

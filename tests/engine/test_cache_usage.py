"""A store learns whether the AoT cache must be trimmed from a running total
(`engine.cacheusage`), not from a walk of every entry (300,000 entries: 2.2 s a store).
The total is a belief: racing writers lose no charge, and a total that lies or cannot
be read is corrected by a walk, so the cache passes its cap by little and not for long."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stockade.engine.cacheusage import USAGE_NAME

from .test_cache_size import FINGERPRINT, KEY, MiB, _cache, _store, _total

ROOT = Path(__file__).resolve().parents[2]


def _count_walks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Each listing of a fingerprint's folder, as a walk makes."""
    listdir = os.listdir
    walks: list[object] = []

    def listed(target: Any = ".") -> Any:
        found = listdir(target)
        if isinstance(target, int) and os.readlink(f"/proc/self/fd/{target}").endswith(
                FINGERPRINT):
            walks.append(target)
        return found

    monkeypatch.setattr(os, "listdir", listed)
    return walks


def _occupied(root: Path) -> int:
    return sum(max(path.stat().st_size, path.stat().st_blocks * 512)
               for path in root.glob("*/*.cwasm"))


def _usage(root: Path) -> tuple[int, int]:
    total, charged = (root / USAGE_NAME).read_text().split()
    return int(total), int(charged)


def test_a_store_far_below_the_cap_walks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _cache(tmp_path, 1 << 30)
    _store(cache, "a", 4096)  # the first store has no total yet: it walks
    monkeypatch.setattr(random, "random", lambda: 0.999)  # no walk by chance
    walks = _count_walks(monkeypatch)
    for name in "bcdefghij":
        _store(cache, name, 4096)
    assert walks == []
    assert _usage(tmp_path)[0] == _occupied(tmp_path)


def test_the_running_total_trims_at_the_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.999)
    cache = _cache(tmp_path, 4 * MiB)
    for number in range(40):
        _store(cache, format(number % 16, "x"), 250 * 1024) if number < 16 else \
            cache.store(FINGERPRINT, format(number, "064x"), bytes(250 * 1024))
        assert _total(tmp_path) <= 4 * MiB
    assert _usage(tmp_path)[0] <= 4 * MiB


def test_a_total_that_lies_is_found_out(tmp_path: Path) -> None:
    # A scope's workers can write its total: one that says the cache is empty must not
    # keep the host from trimming. A store walks by chance in proportion to its size,
    # so one as large as the headroom always does.
    cache = _cache(tmp_path, 2 * MiB)
    for name in "abcdef":
        if (tmp_path / USAGE_NAME).exists():
            (tmp_path / USAGE_NAME).write_text("0 0\n")
        _store(cache, name, 384 * 1024)
    assert _total(tmp_path) <= 2 * MiB
    assert _usage(tmp_path)[0] >= _total(tmp_path)


@pytest.mark.parametrize("planted", ["garbled", "link", "folder", "fifo"])
def test_a_total_that_cannot_be_read_means_a_walk(
        planted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _cache(tmp_path, 1 << 30)
    _store(cache, "a", 4096)
    usage = tmp_path / USAGE_NAME
    usage.unlink()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.write_text("12 34\n")
    if planted == "garbled":
        usage.write_text("lots\n")
    elif planted == "link":
        usage.symlink_to(elsewhere)
    elif planted == "folder":
        usage.mkdir()
    else:
        os.mkfifo(usage)
    monkeypatch.setattr(random, "random", lambda: 0.999)
    walks = _count_walks(monkeypatch)
    _store(cache, "b", 4096)
    assert len(walks) == 1
    assert elsewhere.read_text() == "12 34\n"  # a link is removed, never followed
    _store(cache, "c", 4096)  # a fresh total from the walk on: no walk
    assert len(walks) == 1 and _usage(tmp_path)[0] >= _total(tmp_path)


def test_racing_writers_keep_the_cap(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from stockade.engine.cache import AotCache\n"
        "cache = AotCache(__import__('pathlib').Path(sys.argv[1]), key=lambda: b'k' * 32,"
        " max_bytes=2 << 20)\n"
        "for number in range(40):\n"
        "    sha = format(int(sys.argv[2]) * 1000 + number, '064x')\n"
        "    cache.store('0123456789abcdef', sha, bytes(100 * 1024))\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(number)],
                                cwd=ROOT) for number in range(4)]
    assert [writer.wait(120) for writer in writers] == [0, 0, 0, 0]
    assert _total(tmp_path) <= 2 * MiB
    assert _usage(tmp_path)[0] >= _total(tmp_path)  # no charge lost
    assert KEY  # the same key as the helpers' caches

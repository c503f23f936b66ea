"""The AoT cache of a worker scope, as its compromised workers would attack the host
process that trims and reseals into it (`<root>/scopes/<name>` is theirs to write).

Found by review: thousands of empty fingerprint-named folders made the host's trim hold
one descriptor each (other threads got EMFILE, and a real folder late in the listing was
never trimmed); a folder swapped for a link between its check and its `chmod` made the
host chmod a file of its choosing; a `.usage` lock held forever cost every store a second.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stockade.engine.cache import AotCache, scope_root
from stockade.engine.cacheusage import USAGE_NAME

from .test_cache_size import FINGERPRINT, KEY, MiB, _cache, _store

ROOT = Path(__file__).resolve().parents[2]
PLANTED = 3000  # empty fingerprint-named folders, far past the descriptors allowed
NOFILE = 256

# Stores 12 entries of 256 KiB (3 MiB) into a 2 MiB scope, with at most NOFILE
# descriptors, the real fingerprint's folder listed last, and another thread opening a
# file all along; prints the errors that thread met and what the scope holds then.
_STORES = """
import errno, os, resource, sys, threading
from pathlib import Path
from stockade.engine.cache import AotCache

root, real = Path(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (int(sys.argv[3]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
scope = AotCache(root, key=lambda: b"k" * 32, max_bytes=2 << 20).scope("isolated")
listdir = os.listdir

def late(target="."):
    found = listdir(target)
    if real in found:
        found.remove(real)
        found.append(real)
    return found

os.listdir = late
errors, done = [], threading.Event()

def other():
    while not done.is_set():
        try:
            os.close(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            errors.append(errno.errorcode.get(exc.errno, str(exc.errno)))

thread = threading.Thread(target=other)
thread.start()
try:
    for number in range(12):
        scope.store(real, format(number, "064x"), bytes(256 << 10))
finally:
    done.set()
    thread.join()
print(len(errors), sorted(set(errors)))
"""


def _held(root: Path) -> int:
    return sum(max(path.stat().st_size, path.stat().st_blocks * 512)
               for path in root.glob("*/*.cwasm"))


def test_thousands_of_planted_folders_cost_the_host_no_descriptors(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    scope = scope_root(root, "isolated")
    scope.mkdir(mode=0o700, parents=True)
    for number in range(PLANTED):
        (scope / format(0xf000000000000000 + number, "016x")).mkdir(mode=0o700)
    done = subprocess.run([sys.executable, "-c", _STORES, str(root), FINGERPRINT,
                           str(NOFILE)], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    failed, _ = done.stdout.decode().split(" ", 1)
    assert failed == "0", done.stdout.decode()  # no EMFILE in the other thread
    assert 0 < _held(scope) <= 2 * MiB  # the real folder, listed last, was trimmed
    left = [name for name in os.listdir(scope) if len(name) == 16]
    assert FINGERPRINT in left and len(left) <= 65  # the empty ones past the bound: gone


def test_folders_past_the_bound_count_against_the_cap(tmp_path: Path) -> None:
    # Not empty, so not removed (nothing but the cache's own names is): counted instead,
    # so that what a worker plants costs its own scope room, never the host a skip.
    cache = _cache(tmp_path, 2 * MiB)
    for number in range(200):
        folder = tmp_path / format(0xf000000000000000 + number, "016x")
        folder.mkdir(mode=0o700)
        (folder / "planted").write_bytes(b"x")
    _store(cache, "a", 4096)  # the first store has no total: it walks
    total, _ = (tmp_path / USAGE_NAME).read_text().split()
    assert int(total) >= (200 - 64) * 4096
    assert all((tmp_path / format(0xf000000000000000 + number, "016x") / "planted").exists()
               for number in range(200))


def test_the_real_folder_is_trimmed_whatever_is_planted_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _cache(tmp_path, 2 * MiB)
    for number in range(100):
        folder = tmp_path / format(0xf000000000000000 + number, "016x")
        folder.mkdir(mode=0o700)
        (folder / "planted").write_bytes(b"x")
    listdir = os.listdir

    def late(target: Any = ".") -> Any:
        found = listdir(target)
        if FINGERPRINT in found:
            found.remove(FINGERPRINT)
            found.append(FINGERPRINT)
        return found

    monkeypatch.setattr(os, "listdir", late)
    for name in "abcdef":
        _store(cache, name, 512 * 1024)
    assert _held(tmp_path) <= 2 * MiB


def test_a_folder_swapped_for_a_link_before_its_mode_is_set_leads_nowhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker leaves its folder 0755, then swaps it for a link once the host has looked
    # at it: the host's `chmod` by path made the link's target 0700.
    root = tmp_path / "cache"
    _store(_cache(root, 2 * MiB), "a", 4096)
    folder = root / "fedcba9876543210"
    folder.mkdir()
    folder.chmod(0o755)
    victim = tmp_path / "victim"
    victim.write_bytes(b"the user's")
    victim.chmod(0o644)
    lstat = os.lstat
    done: list[bool] = []

    def swapped(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        info = lstat(path, *args, **kwargs)
        if str(path) == str(folder) and not done:
            done.append(True)
            folder.rename(tmp_path / "moved")
            folder.symlink_to(victim)
        return info

    monkeypatch.setattr(os, "lstat", swapped)
    AotCache(root, key=lambda: KEY, max_bytes=2 * MiB).store(
        "fedcba9876543210", "b" * 64, bytes(4096))
    assert done
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert victim.read_bytes() == b"the user's"


def test_a_loose_folder_is_still_tightened(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    _store(_cache(root, 2 * MiB), "a", 4096)
    (root / "fedcba9876543210").mkdir()
    (root / "fedcba9876543210").chmod(0o755)
    assert AotCache(root, key=lambda: KEY, max_bytes=2 * MiB).store(
        "fedcba9876543210", "b" * 64, bytes(4096)) is not None
    assert stat.S_IMODE((root / "fedcba9876543210").stat().st_mode) == 0o700


def test_a_total_held_locked_costs_a_store_little(tmp_path: Path) -> None:
    # A worker holding its scope's `.usage` lock for good: each host store waited a
    # second for it before walking.
    cache = _cache(tmp_path / "cache", 2 * MiB).scope("isolated")
    _store(cache, "a", 4096)
    holder = os.open(cache.root / USAGE_NAME, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        for name in "bcdef0":
            _store(cache, name, 512 * 1024)
        elapsed = time.monotonic() - started
    finally:
        os.close(holder)
    assert elapsed < 1.5, elapsed  # six stores: six seconds of waiting before
    assert _held(cache.root) <= 2 * MiB  # each walked instead

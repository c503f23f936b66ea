"""Temporary directories whose owner was killed outright are removed by the next owner;
nothing else is: a live owner's, a kept scratch directory's, another user's, a symlink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from stockade.tempdirs import LockedTempDir

PREFIX = "stockade-test-"
OWNER = """
import sys, time
from stockade.tempdirs import LockedTempDir
made = LockedTempDir(sys.argv[2], sys.argv[1])
(made.path / "worker-0.json").write_text("{}")
print(made.path, flush=True)
time.sleep(60)
"""


def killed_owners_dir(base: Path) -> Path:
    """The directory of a process that made one, then was killed by SIGKILL."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(base), PREFIX],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    with owner.stdout:
        path = Path(owner.stdout.readline().strip())
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert path.is_dir()
    return path


def test_a_killed_owners_directory_is_removed_by_the_next_one(tmp_path: Path) -> None:
    left = killed_owners_dir(tmp_path)
    young = LockedTempDir(PREFIX, str(tmp_path))  # within STALE_AFTER: left for now
    assert left.is_dir()
    made = LockedTempDir(PREFIX, str(tmp_path), stale_after=0)
    assert not left.exists()
    assert made.path.is_dir() and young.path.is_dir()  # both locked by this process
    young.close()
    made.close()


def test_a_live_owners_directory_is_kept(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path), PREFIX],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    try:
        path = Path(owner.stdout.readline().strip())
        LockedTempDir(PREFIX, str(tmp_path), stale_after=0).close()
        assert (path / "worker-0.json").exists()
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()


def test_kept_scratch_other_users_and_symlinks_are_never_removed(tmp_path: Path) -> None:
    kept = killed_owners_dir(tmp_path)
    (kept / "stockade-scratch-abc").mkdir()
    others = killed_owners_dir(tmp_path)
    if os.getuid() == 0:
        os.chown(others, 65534, 65534)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("x")
    (tmp_path / f"{PREFIX}link").symlink_to(target)
    plain = tmp_path / f"{PREFIX}file"
    plain.write_text("x")
    LockedTempDir(PREFIX, str(tmp_path), kept="stockade-scratch-", stale_after=0).close()
    assert (kept / "stockade-scratch-abc").is_dir()
    assert (target / "precious").exists() and plain.exists()
    if os.getuid() == 0:
        assert others.is_dir()

"""Attack tests on the gateway's image lock (`stockade.lock`): it decides which image
digest runs, so a lock another user could plant or edit must not be believed, and
writing it must not follow a planted symlink."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stockade.gateway.images import Images, lock_paths

DIGEST = "sha256:" + "ab" * 32
REF = "oci://registry.example/app:v1"


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STOCKADE_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "app" / "stockade.toml"
    path.parent.mkdir()
    path.write_text("")
    return path


def plant(path: Path, mode: int = 0o644) -> None:
    path.write_text(json.dumps({"version": 1, "images": {REF: {"digest": DIGEST}}}))
    os.chmod(path, mode)


def test_an_own_lock_is_believed(manifest: Path) -> None:
    plant(manifest.with_suffix(".lock"))
    assert Images(manifest)._pinned == {REF: DIGEST}


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_a_lock_others_can_write_is_ignored(manifest: Path, mode: int) -> None:
    plant(manifest.with_suffix(".lock"), mode)
    assert Images(manifest)._pinned == {}


def test_a_symlinked_lock_is_ignored(manifest: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    plant(elsewhere)
    manifest.with_suffix(".lock").symlink_to(elsewhere)
    assert Images(manifest)._pinned == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
def test_a_lock_owned_by_another_user_is_ignored(manifest: Path) -> None:
    lock = manifest.with_suffix(".lock")
    plant(lock)
    os.chown(lock, 54321, 54321)
    assert Images(manifest)._pinned == {}
    os.chown(manifest, 54321, 54321)  # the manifest's owner is believed
    assert Images(manifest)._pinned == {REF: DIGEST}


def test_saving_never_writes_through_a_planted_temporary_symlink(
        manifest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    beside, fallback = lock_paths(manifest)
    (beside.parent / f".{beside.name}.{os.getpid()}.tmp").symlink_to(victim)
    images = Images(manifest)
    images._used = {REF: {"digest": DIGEST, "module": DIGEST}}
    assert images.save() == fallback  # the state directory's lock instead
    assert victim.read_text() == "precious\n"
    assert json.loads(fallback.read_text())["images"][REF]["digest"] == DIGEST
    assert Images(manifest)._pinned == {REF: DIGEST}


def test_a_lock_nested_too_deep_is_read_as_none(manifest: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """`serve` died at start with a RecursionError traceback (found by review): a lock it
    cannot read has tags resolved again, as any unreadable one."""
    path = lock_paths(manifest)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    os.chmod(path, 0o600)
    assert Images(manifest)._pinned == {}
    assert "unreadable lock file (RecursionError)" in caplog.text

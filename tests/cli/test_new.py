"""`stockade new` in a directory someone else may have prepared: it writes only regular
files of its own, never through a planted symlink, never blocks on a FIFO, and checks
every file it would write (the C starter's hello.wasm too) before writing any."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import STOCKADE, refused, stockade


@pytest.mark.parametrize("force", [False, True])
def test_a_planted_symlink_is_refused_even_with_force(tmp_path: Path, force: bool) -> None:
    app = tmp_path / "app"
    app.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    (app / "hello.wat").symlink_to("../precious.txt")
    (app / "stockade.toml").symlink_to("../victim.txt")  # dangling: "does not exist"
    done = stockade("new", *(["--force"] if force else []), str(app), timeout=30)
    refused(done, "stockade.toml is a symlink", "even with --force")
    assert precious.read_text() == "precious\n"
    assert not (tmp_path / "victim.txt").exists()
    assert sorted(os.listdir(app)) == ["hello.wat", "stockade.toml"]  # nothing written
    assert (app / "hello.wat").is_symlink() and (app / "stockade.toml").is_symlink()


def test_a_fifo_or_a_link_to_one_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    for name, make in (("a", lambda p: os.mkfifo(p)),
                       ("b", lambda p: p.symlink_to(tmp_path / "pipe"))):
        app = tmp_path / name
        app.mkdir()
        make(app / "hello.wat")
        refused(stockade("new", "--force", str(app), timeout=30),
                f"{name}/hello.wat is a {'FIFO' if name == 'a' else 'symlink'}")
        assert not (app / "stockade.toml").exists()


def test_a_symlinked_subdirectory_is_not_written_into(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    app = tmp_path / "app"
    app.mkdir()
    (app / "app").symlink_to(outside)
    done = stockade("new", "--lang", "python", "--force", str(app), timeout=30)
    refused(done, "app is a symlink")
    assert list(outside.iterdir()) == [] and not (app / "stockade.toml").exists()


def test_the_c_starters_hello_wasm_counts_as_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "hello.wasm").write_bytes(b"mine")
    done = stockade("new", "--lang", "c", str(tmp_path), timeout=60)
    refused(done, "hello.wasm", "--force")
    assert (tmp_path / "hello.wasm").read_bytes() == b"mine"
    assert not (tmp_path / "hello.c").exists() and not (tmp_path / "stockade.toml").exists()


def test_force_replaces_regular_files_and_keeps_their_mode(tmp_path: Path) -> None:
    (tmp_path / "hello.wat").write_text("old")
    (tmp_path / "hello.wat").chmod(0o640)
    (tmp_path / "keep").hardlink_to(tmp_path / "hello.wat")  # replaced, not written through
    done = stockade("new", "--force", str(tmp_path), timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hello.wat").read_text().startswith(";;")
    assert (tmp_path / "hello.wat").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "keep").read_text() == "old"


def test_the_starter_manifest_is_never_writable_by_others(tmp_path: Path) -> None:
    """Under umask 002 the starter's stockade.toml was 0664, and `serve` (which refuses a
    manifest others could rewrite) refused the manifest `new` had just written."""
    (tmp_path / "stockade.toml").write_text("old")
    (tmp_path / "stockade.toml").chmod(0o666)  # replaced with --force: keeps 0644 of it
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for where, flags in ((fresh, ()), (tmp_path, ("--force",))):
        done = subprocess.run(["sh", "-c", 'umask 002 && exec "$@"', "sh", *STOCKADE, "new",
                               *flags, str(where)], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert (where / "stockade.toml").stat().st_mode & 0o777 == 0o644
        checked = stockade("check", "--no-host", "--manifest", str(where / "stockade.toml"),
                           timeout=60)
        assert b"could rewrite" not in checked.stdout + checked.stderr

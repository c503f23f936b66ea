"""`Engine.load` serves an unchanged file from memory; a file replaced or rewritten is
loaded again, whatever its size and mtime say: a same-size replacement with its mtime
kept (`cp -p`, `rsync -t`) kept serving the old code, a gateway reloaded included
(found by review)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stockade.engine import Engine, EngineConfig
from tests.conftest import guest


def _same_size_pair(tmp_path: Path) -> tuple[bytes, bytes]:
    first = guest("hello.wasm").read_bytes()
    second = bytearray(first)
    at = first.index(b"Hello")
    second[at:at + 5] = b"Jello"
    return first, bytes(second)


@pytest.mark.parametrize("how", ["replaced", "in-place"])
def test_a_file_changed_with_its_size_and_mtime_kept_is_loaded_again(
        tmp_path: Path, how: str) -> None:
    first, second = _same_size_pair(tmp_path)
    path = tmp_path / "app.wasm"
    path.write_bytes(first)
    engine = Engine(EngineConfig(), cache=None)
    try:
        old = engine.load(path)
        assert engine.load(path) is old  # unchanged: from memory
        before = os.stat(path)
        if how == "replaced":
            staged = tmp_path / "staged.wasm"
            staged.write_bytes(second)
            shutil.copystat(path, staged)
            os.replace(staged, path)
        else:
            with open(path, "r+b") as handle:
                handle.write(second)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        new = engine.load(path)
        assert new.sha256 != old.sha256
    finally:
        engine.close()

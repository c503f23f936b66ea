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


def test_an_engine_keeps_only_its_most_recently_used_modules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host running whatever modules it is given grew ~34 KB a distinct module for
    as long as it lived: every load and pre-instantiation was kept (found by review).
    An engine keeps `KEPT_MODULES`, the most recently used; the others load again."""
    from stockade.engine import engine as engine_module
    from stockade.hostcalls import LINKER_NAME, build_linker

    monkeypatch.setattr(engine_module, "KEPT_MODULES", 3)
    engine = Engine(EngineConfig(), cache=None)
    try:
        engine.linker(LINKER_NAME, build_linker)
        paths, loaded = [], []
        for number in range(5):
            path = tmp_path / f"m{number}.wat"
            path.write_text(f'(module (func (export "_start")) (global i32 (i32.const {number})))')
            paths.append(path)
            loaded.append(engine.load(path))
            engine.instance_pre(loaded[-1], LINKER_NAME)
        assert len(engine._by_path) == len(engine._pres) == 3
        assert engine.load(paths[-1]) is loaded[-1]  # kept: from memory
        assert engine.load(paths[0]) is not loaded[0]  # forgotten: loaded again
    finally:
        engine.close()

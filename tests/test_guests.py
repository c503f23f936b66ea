"""`stockade.guests`: built guests found, big ones generated once into the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stockade.errors import ModuleError
from stockade.guests import guest_path, guests_root
from stockade.paths import cache_dir
from tests.conftest import GUESTS, ROOT


def test_a_checkout_uses_its_build_directory() -> None:
    assert guests_root() == GUESTS
    assert guest_path("attacks/cpu_loop.wasm") == GUESTS / "attacks" / "cpu_loop.wasm"


def test_a_missing_module_with_a_generator_is_generated_once(tmp_path: Path) -> None:
    # laid out as the wheel carries it: the generator and its helper, not the module
    root = tmp_path / "guests"
    (root / "attacks").mkdir(parents=True)
    for name in ("gen_compile_bomb.py", "wasm_encode.py"):
        shutil.copy(ROOT / "guests" / "attacks" / name, root / "attacks" / name)
    first = guest_path("attacks/compile_bomb.wasm", root)
    assert first.is_file() and first.read_bytes().startswith(b"\0asm")
    assert not first.is_relative_to(root)  # into the cache, never next to package data
    stamp = first.stat().st_mtime_ns
    again = guest_path("attacks/compile_bomb.wasm", root)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.parent.iterdir() if p.name.startswith(".")] == []


def test_a_failing_generator_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "gen_broken.py").write_text("raise SystemExit('no room for a bomb')\n")
    with pytest.raises(ModuleError, match="broken.wasm: generating it with gen_broken.py "
                                          "failed: no room for a bomb"):
        guest_path("broken.wasm", tmp_path)
    # nothing half-made is left for the next call to find
    assert not list((cache_dir() / "guests").glob("*gen_broken-*"))
    assert guest_path("other.wasm", tmp_path) == tmp_path / "other.wasm"

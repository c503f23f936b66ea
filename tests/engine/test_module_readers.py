"""Every command that reads a module file for its bytes (advise, oci build, inspect and
its checklist) reads it as the loader does: one `ModuleFile` read (regular files only,
bounded) and one WAT translation (`wat_binary`), with the same one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.advise.needs import Needs, needs_from_module
from stockade.cli.inspect import read_module as inspect_read
from stockade.errors import ModuleError
from stockade.inspect.checklist import _inspection
from stockade.inspect.modulefile import inspect_file
from stockade.oci.build import module_bytes

READERS: dict[str, Callable[[Path], object]] = {
    "advise": lambda path: needs_from_module(inspect_file(path, str(path)), Needs()),
    "oci": module_bytes,
    "inspect": lambda path: inspect_read(str(path)),
}


@pytest.mark.parametrize("reader", READERS)
def test_bad_wat_is_refused_with_the_loaders_words(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.wat"
    path.write_text("(module\n  (func $oops\n")
    with pytest.raises(ModuleError) as refused:
        READERS[reader](path)
    message = str(refused.value)
    assert message.startswith(f"{path}: invalid WAT: line 3, column ")
    assert "\n" not in message


@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_not_waited_on(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "module.wasm"
    os.mkfifo(path)  # no writer: reading it would wait forever
    with pytest.raises(ModuleError, match="not a regular file"):
        READERS[reader](path)


@pytest.mark.parametrize("reader", READERS)
def test_wat_is_read_as_the_loader_reads_it(reader: str, tmp_path: Path) -> None:
    path = tmp_path / "ok.wat"
    path.write_text('(module (memory (export "memory") 1) (func (export "_start")))')
    READERS[reader](path)  # no error


def test_the_checklist_reads_wat_and_refuses_a_fifo(tmp_path: Path) -> None:
    good = tmp_path / "ok.wat"
    good.write_text('(module (memory (export "memory") 1) (func (export "_start")))')
    assert _inspection(good) is not None
    fifo = tmp_path / "fifo.wasm"
    os.mkfifo(fifo)
    assert _inspection(fifo) is None

"""A module file read for review (`inspect`, `advise`, `check`, `sign`, `verify`): the
binary bytes, with one wording for a file that is not a module, truncated, or binary
data passed off as text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..binary import MAGIC, MalformedModule, sections
from ..errors import ModuleError

if TYPE_CHECKING:
    from .report import Inspection

__all__ = ["module_binary", "inspect_file", "inspect_read"]

# Why a text file's signature is never checked (`verify`, `check`).
TEXT_UNSIGNED = ("WebAssembly text carries no signature a run would accept (runs refuse "
                 "it under [trust])")
# Control bytes no text holds (tab, new line, form feed and return are text).
_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _is_text(data: bytes) -> bool:
    if _CONTROLS.search(data):  # a regular expression: a byte loop took 25 s on 500 MB
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def module_binary(path: Path, name: str, text: bool = True) -> bytes:
    """The binary module of file `path` (`.wat` translated unless not `text`), shown as
    `name` in errors. Its sections are walked, so a truncated module is refused here.
    Raises ModuleNotFound, ModuleError; reads at most MAX_MODULE_BYTES."""
    return _binary(path, name, text)[0]


def _binary(path: Path, name: str, text: bool) -> tuple[bytes, bool]:
    """`module_binary`, and whether the file was text."""
    from ..engine.loader import read_module, sniff_kind, wat_binary

    data = read_module(path)
    kind = sniff_kind(data[:64], name)
    if kind == "cwasm":
        raise ModuleError(f"{name}: a precompiled .cwasm is native code; inspect the .wasm")
    if kind == "wat":
        if not _is_text(data):  # the parser's message would quote the binary junk
            raise ModuleError(f"{name}: not a WebAssembly module (no \\0asm header) and not "
                              "WebAssembly text (binary data)")
        if not text:
            raise ModuleError(f"{name}: {TEXT_UNSIGNED}; give the signed .wasm")
        data = wat_binary(data, str(path))  # the line and column are in that file
    elif len(data) < len(MAGIC) and MAGIC.startswith(data):  # not "a component?"
        raise ModuleError(f"{name}: malformed module: unexpected end at offset {len(data)} "
                          f"(truncated: a module's header is {len(MAGIC)} bytes)")
    try:
        for _ in sections(data):
            pass
    except MalformedModule as exc:
        raise ModuleError(f"{name}: malformed module: {exc}") from None
    return data, kind == "wat"


def inspect_file(path: Path, name: str) -> Inspection:
    """The inspection of module file `path` (see `module_binary`). Raises ModuleNotFound
    or ModuleError (a malformed module: the message names the offset)."""
    return inspect_read(path, name)[0]


def inspect_read(path: Path, name: str) -> tuple[Inspection, bool]:
    """`inspect_file`, and whether the file was text (whose signature no run accepts)."""
    from .report import inspect_module

    data, was_text = _binary(path, name, True)
    try:
        return inspect_module(data, name), was_text
    except MalformedModule as exc:
        raise ModuleError(f"{name}: malformed module: {exc}") from None

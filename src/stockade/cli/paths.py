"""The one parameter type of every path option and argument of the command line.

Click's `Path` checks refused a directory given for a file (or the reverse) with its
three-line usage block and exit 2. Here a path of the wrong kind is a StockadeError: one
line, with the exit code of what the path is for (a module: 127 not found, 126 not a
regular file, in the words `run` uses; anything else: 125). Only what a name alone
settles is judged here; the code that opens the path still reports the rest (missing,
unreadable, a FIFO, a link where none may be) in one line of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError

__all__ = ["PathParam"]

if TYPE_CHECKING:
    _ParamType = click.ParamType[Path]
else:
    _ParamType = click.ParamType  # generic only from click 8.5 on

_EXPECTS = ("file", "directory", "any", "module", "new")


class PathParam(_ParamType):
    """A path on the command line, given to the command as a `Path`.

    `expects`: `file` (a directory there is refused), `directory` (anything else there
    is refused), `any` (a file or a directory, or something yet to be written),
    `module` (read as `run` reads a module: `ModuleFile`), or `new` (a name the command
    judges itself before writing there, the empty one included). `what` names it in
    messages ("policy file"). An empty name is refused for all but `new`: `Path('')` is
    `.`, the current directory. Raises UsageError, or ModuleNotFound / ModuleError for
    a module.
    """

    def __init__(self, expects: str = "file", what: str | None = None) -> None:
        if expects not in _EXPECTS:
            raise ValueError(f"expects: one of {', '.join(_EXPECTS)}, not {expects!r}")
        self.expects = expects
        self.what = what or ("directory" if expects == "directory" else "file")
        # The metavar click shows in help, as its own Path type named it.
        self.name = {"file": "file", "directory": "directory"}.get(expects, "path")

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        text = os.fspath(value)  # a default may be a Path already
        if self.expects == "module":
            return _module(text)
        if self.expects == "new":
            return Path(text)
        where = _where(param)
        if not text:
            raise UsageError(f"{where}'': an empty name names no {self.what}")
        path = Path(text)
        # os.path, not Path: they answer False where Path.is_dir raises (EACCES).
        if self.expects == "file" and os.path.isdir(path):
            raise UsageError(f"{where}{path}: is a directory; name the {self.what} itself")
        if self.expects == "directory" and os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{where}{path}: not a directory")
        return path


def _module(text: str) -> Path:
    """A module path checked as `run` checks its MODULE, so every command says the same."""
    from ..engine.loader import MAX_MODULE_BYTES, ModuleFile
    from .source import module_path

    path = module_path(text)
    ModuleFile(path, MAX_MODULE_BYTES).close()
    return path


def _where(param: click.Parameter | None) -> str:
    """The option a message names ('--config ', its first long name), or nothing for an
    argument (the path itself says which)."""
    if not isinstance(param, click.Option):
        return ""
    names = [name for name in param.opts if name.startswith("--")] or param.opts
    return f"{names[0]} "

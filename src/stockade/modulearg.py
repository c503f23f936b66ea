"""What every sandbox takes as a module: a path (str or path-like) or the module's bytes.

One check for the in-process, isolated and pooled sandboxes, made before anything is
read, so a caller's mistake is a UsageError naming it, never a TypeError from deep in a
load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["module_argument"]


def module_argument(module: object, who: str, *also: type) -> Any:
    """`module` as a str path, a Path, or bytes (a bytearray, memoryview or subclass of
    bytes copied), or an instance of one of `also`; UsageError naming `who` for anything
    else and for a path with a NUL character. A path-like's bytes are decoded as `open`
    decodes them."""
    if also and isinstance(module, also):
        return module
    if isinstance(module, bytearray | memoryview) or (
            isinstance(module, bytes) and type(module) is not bytes):
        # A subclass as plain bytes: an isolated worker cannot unpickle the caller's class.
        return bytes(module)
    if isinstance(module, os.PathLike) and not isinstance(module, Path):
        try:
            path = os.fspath(module)
        except TypeError as exc:  # its __fspath__ gave no str or bytes
            raise UsageError(f"{who}: a module {type(module).__name__} is no path: {exc}"
                             ) from None
        module = Path(os.fsdecode(path))
    if not isinstance(module, str | Path | bytes):
        kinds = ["a path", "bytes", *(f"a {kind.__name__}" for kind in also)]
        raise UsageError(f"{who}: a module is {', '.join(kinds[:-1])} or {kinds[-1]}, "
                         f"not {type(module).__name__}")
    if isinstance(module, str | Path) and "\0" in str(module):
        raise UsageError(f"{who}: a module path cannot contain a NUL character")
    return module

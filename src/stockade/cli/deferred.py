"""Standard-library modules the `stockade run` fast lane imports but does not use.

- `inspect`: `dataclasses` imports it at its top (and with it `ast`, `dis`, `tokenize`,
  `linecache`), some 16M instructions of a cached `stockade run` (about 5 %), only to
  call `inspect.signature` for a dataclass without a docstring, which Stockade never
  defines.
- `hashlib`: importing it loads OpenSSL (`_hashlib`, some 12M instructions). A cached
  run hashes only through `stockade.digests`; modules that hash whole files when the
  cache misses import `hashlib` at their top.

The fast lane stands a placeholder module in for each: the real module is imported on
the first attribute anyone reads, so code that does use it sees no difference.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["defer_modules", "DEFERRED"]

DEFERRED = ("inspect", "hashlib")


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute is read, then becomes its copy."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)  # the import lock orders racers
        self.__dict__.update(real.__dict__)  # holders of the placeholder read it directly
        return getattr(real, name)


def defer_modules() -> None:
    """Put a placeholder for each module of `DEFERRED` in `sys.modules` unless it is
    already imported. `import inspect` then binds the placeholder without reading it (its
    `__spec__` is None, so the import system does not wait for it), and the first
    attribute read imports the real module."""
    for name in DEFERRED:
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)

"""Standard-library modules the `stockade run` fast lane imports but does not use.

- `inspect`: `dataclasses` imports it at its top (and with it `ast`, `dis`, `tokenize`,
  `linecache`), some 16M instructions of a cached `stockade run` (about 5 %), only to
  call `inspect.signature` for a dataclass without a docstring, which Stockade never
  defines.
- `hashlib`: importing it loads OpenSSL (`_hashlib`, some 12M instructions). A cached
  run hashes only through `stockade.digests`; modules that hash whole files when the
  cache misses import `hashlib` at their top.
- `ipaddress`: `urllib.parse` imports it at its top (and `pathlib` imports
  `urllib.parse`), about 0.6 ms of a cached run, for URLs with a bracketed host.

`stockade run` stands a placeholder module in for each before it reads its command line
(the click fallback for an unusual one keeps them): the real module is imported on the
first attribute anyone reads, so code that does use it sees no difference.

Garbage collection waits too: start-up allocates some 100,000 objects and frees almost
none, so the collections their allocation triggers (4 % of a cached run) find nothing.
`pause_collection` turns it off; `resume_collection`, when the guest starts, moves what
start-up made out of the collector's sight (`gc.freeze`) and turns it back on;
`end_pause` undoes both for a caller that goes on in the same process.
"""

from __future__ import annotations

import gc
import importlib
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["defer_modules", "DEFERRED", "pause_collection", "resume_collection", "end_pause"]

DEFERRED = ("inspect", "hashlib", "ipaddress")


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


_state = {"paused": False, "frozen": False}


def pause_collection() -> None:
    """Turn garbage collection off for start-up, unless something else already did."""
    if gc.isenabled():
        gc.disable()
        _state["paused"] = True


def resume_collection() -> None:
    """Turn collection back on if `pause_collection` turned it off, leaving the objects
    made until now out of every later collection."""
    if _state["paused"]:
        _state["paused"] = False
        gc.freeze()
        _state["frozen"] = True
        gc.enable()


def end_pause() -> None:
    """Restore collection as it was before `pause_collection` (a run that ended early,
    or a caller that keeps the process going)."""
    if _state["paused"]:
        _state["paused"] = False
        gc.enable()
    if _state["frozen"]:
        _state["frozen"] = False
        gc.unfreeze()

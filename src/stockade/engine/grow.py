"""A run's refused grows: what the host reads of a module whose `memory.grow`s are
watched (the rewriting is `engine.growwatch`; this is the part every run imports).

Constants here, so an AoT cache key is made and a run reads the watch without loading
the rewriting.
"""

from __future__ import annotations

__all__ = ["EXPORT", "VERSION", "refused_bytes"]

# The global holding the largest size, in pages, a refused `memory.grow` asked for.
EXPORT = "__stockade_grow_refused"
VERSION = 2  # of the rewriting (part of the AoT cache key)
_PAGE = 65536
_U64 = (1 << 64) - 1


def refused_bytes(pages: int) -> int:
    """Bytes the largest refused grow asked for, from the global's value (pages; the
    C API reads it as a signed i64). 0: none was refused."""
    return (pages & _U64) * _PAGE

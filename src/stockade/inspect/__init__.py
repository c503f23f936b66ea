"""Static facts about a module, read from its bytes without compiling or running it."""

from __future__ import annotations

from ..binary import Import, MalformedModule, read_imports

__all__ = ["Import", "MalformedModule", "read_imports"]

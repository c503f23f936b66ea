"""The wasmtime layer: engine configurations, module loading, the AoT cache, epochs, traps.

Names are imported from their modules on first use: the AoT cache, the seal and the
C-API fast path must stay usable without importing wasmtime-py (`engine.engine` and
`engine.loader` import it).
"""

from __future__ import annotations

from ..lazyexports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cache import AotCache
    from .config import EngineConfig
    from .engine import Engine, close_engines, get_engine
    from .guard import CompileGuard
    from .loader import MAX_MODULE_BYTES, LoadedModule
    from .ticker import EpochTicker
    from .traps import Ending, classify

__all__ = [
    "AotCache",
    "EngineConfig",
    "Engine",
    "CompileGuard",
    "get_engine",
    "close_engines",
    "LoadedModule",
    "MAX_MODULE_BYTES",
    "EpochTicker",
    "Ending",
    "classify",
]

# public name -> the module defining it
_EXPORTS = {
    "AotCache": "cache", "EngineConfig": "config", "Engine": "engine",
    "get_engine": "engine", "close_engines": "engine", "CompileGuard": "guard",
    "LoadedModule": "loader", "MAX_MODULE_BYTES": "loader", "EpochTicker": "ticker",
    "Ending": "traps", "classify": "traps",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

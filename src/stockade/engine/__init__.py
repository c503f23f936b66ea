"""The wasmtime layer: engine configurations, module loading, the AoT cache, epochs, traps."""

from __future__ import annotations

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

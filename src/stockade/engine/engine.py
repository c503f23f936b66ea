"""`Engine`: one wasmtime engine per configuration, with its epoch ticker, module loader,
AoT cache and pre-instantiated modules."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import wasmtime

from ..fileid import FileKey, path_key
from ..paths import cache_dir
from ..recent import Recent
from .cache import AotCache
from .config import EngineConfig
from .guard import CompileGuard
from .loader import MAX_MODULE_BYTES, LoadedModule, ModuleLoader, refuse_precompiled
from .ticker import EpochTicker

__all__ = ["Engine", "get_engine", "close_engines"]

LinkerFactory = Callable[[wasmtime.Engine], wasmtime.Linker]
# Modules an engine keeps loaded and pre-instantiated, the most recently used: a host
# running whatever it is given grew by every distinct module (found by review). Past
# it, a module loads again from the AoT cache.
KEPT_MODULES = 512


# The path and the version of the file there (`fileid.file_key`): the size and mtime
# alone kept serving old code after a same-size `cp -p` (found by review).
_LoadKey = tuple[str, FileKey]


def _load_key(path: Path) -> _LoadKey | None:
    version = path_key(path)
    return None if version is None else (str(path), version)


class Engine:
    """A wasmtime engine for one `EngineConfig`.

    Modules loaded through it are compiled once (then served from the on-disk AoT
    cache and an in-memory table); `instance_pre` returns a pre-linked module so each
    run only creates a store and instantiates. `close()` closes the epoch ticker (runs
    in flight keep their deadlines); it is safe to call twice.
    """

    def __init__(self, config: EngineConfig, cache: AotCache | None = None) -> None:
        self.config = config
        self.wasmtime = wasmtime.Engine(config.to_wasmtime())
        self.fingerprint = config.fingerprint()
        self.cache = cache if cache is not None else AotCache(cache_dir())
        self.ticker = EpochTicker(self.wasmtime.increment_epoch)
        self._loader = ModuleLoader(self.wasmtime, config, self.cache)
        self._lock = threading.Lock()
        self._by_path: Recent[_LoadKey, LoadedModule] = Recent(KEPT_MODULES)
        self._linkers: dict[str, wasmtime.Linker] = {}
        self._pres: Recent[tuple[str, str], wasmtime.InstancePre] = Recent(KEPT_MODULES)
        self._closed = False

    def load(self, source: str | Path | bytes, name: str | None = None,
             guard: CompileGuard | None = None, *,
             allow_precompiled: bool = False) -> LoadedModule:
        """Load a `.wasm`, `.wat` or `.cwasm` file (or bytes). A `.cwasm` is native code:
        it loads only with `allow_precompiled` and a MAC this host's key verifies. Raises
        ModuleNotFound, ModuleError (also when `guard` refuses it) or PrecompiledRefused.
        Repeated loads of an unchanged file are served from memory.

        A tripwire engine loads what it cannot rewrite (a `.cwasm`, an instruction the
        rewriting does not know) through its epochs twin: run a module on the engine
        `for_module` names."""
        if isinstance(source, bytes):
            return self._compiled(lambda loader: loader.load_bytes(
                source, name or "<bytes>", guard, allow_precompiled=allow_precompiled))
        path = Path(source)
        key = _load_key(path)
        with self._lock:
            known = self._by_path.get(key) if key is not None else None
        if key is not None and known is not None:
            if guard is not None:
                guard.check_size(key[1][2], str(path))
            if known.precompiled and not allow_precompiled:
                raise refuse_precompiled(path.name, known.sha256)
            return known
        loaded = self._compiled(lambda loader: loader.load_path(
            path, guard, allow_precompiled=allow_precompiled))
        if key is not None and _load_key(path) == key:  # not changed while it loaded
            with self._lock:
                self._by_path.put(key, loaded)
        return loaded

    def for_module(self, loaded: LoadedModule) -> Engine:
        """The engine `loaded` was compiled by: this one, or a tripwire engine's epochs
        twin (see `load`)."""
        if self.config.tripwire and not loaded.tripwire:
            return get_engine(self.config.with_epochs())
        return self

    def _compiled(self, load: Callable[[ModuleLoader], LoadedModule]) -> LoadedModule:
        if not self.config.tripwire:
            return load(self._loader)
        from .tripwire import Unsupported

        try:
            return load(self._loader)
        except Unsupported:
            return load(get_engine(self.config.with_epochs())._loader)

    def digest(self, source: str | Path, limit: int = MAX_MODULE_BYTES) -> str:
        """The sha256 a load of this file reports, cheaply, reading no more than `limit`
        bytes (see ModuleLoader.digest)."""
        return self._loader.digest(Path(source), limit)

    def linker(self, name: str, build: LinkerFactory) -> wasmtime.Linker:
        """The linker registered under `name`, built once by `build(engine)`."""
        with self._lock:
            linker = self._linkers.get(name)
            if linker is None:
                linker = self._linkers[name] = build(self.wasmtime)
            return linker

    def instance_pre(self, loaded: LoadedModule, linker_name: str) -> wasmtime.InstancePre:
        """A pre-instantiated module for the named linker (see `linker`); cached by digest."""
        key = (linker_name, loaded.sha256)
        with self._lock:
            pre = self._pres.get(key)
            if pre is None:
                pre = self._pres.put(key, self._linkers[linker_name].instantiate_pre(
                    loaded.module))
            return pre

    def is_warm(self, loaded: LoadedModule, linker_name: str) -> bool:
        """True once `instance_pre` has prepared this module (its next run is warm)."""
        return (linker_name, loaded.sha256) in self._pres

    def close(self) -> None:
        """Close the epoch ticker and drop cached modules. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ticker.close()
        with self._lock:
            self._pres.clear()
            self._by_path.clear()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_engines: dict[EngineConfig, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(config: EngineConfig) -> Engine:
    """The process-wide engine for `config` (created on first use)."""
    with _engines_lock:
        engine = _engines.get(config)
        if engine is None or engine._closed:
            engine = _engines[config] = Engine(config)
        return engine


def close_engines() -> None:
    """Close every engine made by `get_engine`."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()

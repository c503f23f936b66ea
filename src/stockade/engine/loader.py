"""Turn a path or bytes into a compiled wasmtime `Module`: `.wasm`, `.wat` or `.cwasm`."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from ..errors import ModuleError, ModuleNotFound
from ..progress import progress
from .cache import AotCache
from .guard import CompileGuard
from .traps import describe_load_error

__all__ = ["LoadedModule", "ModuleLoader", "MAX_MODULE_BYTES", "sniff_kind"]

# A module larger than this is refused before it is read (an "enormous on disk" module).
MAX_MODULE_BYTES = 512 * 1024**2
WASM_MAGIC = b"\0asm"
ELF_MAGIC = b"\x7fELF"
# Without a policy: only the absolute size cap; code shape is the policy's business.
_DEFAULT_GUARD = CompileGuard(MAX_MODULE_BYTES, MAX_MODULE_BYTES, 2**32)


@dataclass(frozen=True)
class LoadedModule:
    """A compiled module ready to instantiate.

    `sha256` is the digest of the module's bytes (of the `.cwasm` file itself for
    precompiled input); `from_cache` tells whether the AoT cache spared a compile.
    """

    module: wasmtime.Module
    sha256: str
    name: str
    from_cache: bool
    compile_ms: float


def sniff_kind(head: bytes, name: str) -> str:
    """'wasm', 'cwasm' or 'wat' from a file's first bytes and name; ModuleError otherwise."""
    if head.startswith(WASM_MAGIC):
        return "wasm"
    if head.startswith(ELF_MAGIC):
        return "cwasm"
    stripped = head.lstrip()
    if name.endswith(".wat") or stripped.startswith((b"(module", b"(component", b";;")):
        return "wat"
    if not head:
        raise ModuleError(f"{name}: empty file, not a WebAssembly module")
    raise ModuleError(
        f"{name}: not a WebAssembly module (no \\0asm header); expected .wasm, .wat or .cwasm"
    )


class ModuleLoader:
    """Loads modules for one wasmtime engine, through the on-disk AoT cache.

    A cold start from the cache reads only the file's metadata: a small stat index maps
    (path, size, mtime, inode) to the module's sha256, then the `.cwasm` is mapped in.
    """

    def __init__(self, engine: wasmtime.Engine, fingerprint: str, cache: AotCache | None) -> None:
        self._engine = engine
        self._fingerprint = fingerprint
        self._cache = cache

    def load_path(self, path: Path, guard: CompileGuard | None = None) -> LoadedModule:
        """Load a module file. Raises ModuleNotFound or ModuleError (also when `guard`
        refuses it)."""
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ModuleNotFound(f"{path}: no such module file") from None
        except OSError as exc:
            raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
        if not path.is_file():
            raise ModuleError(f"{path}: not a regular file")
        (guard or _DEFAULT_GUARD).check_size(info.st_size, str(path))
        hit = self._from_stat_index(path, info)
        if hit is not None:
            return hit
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
        loaded = self.load_bytes(data, path.name, guard)
        self._remember_stat(path, info, loaded.sha256)
        return loaded

    def load_bytes(self, data: bytes, name: str = "<bytes>",
                   guard: CompileGuard | None = None) -> LoadedModule:
        """Load a module from memory. Raises ModuleError."""
        guard = guard or _DEFAULT_GUARD
        guard.check_size(len(data), name)
        kind = sniff_kind(data[:64], name)
        if kind == "cwasm":
            return self._deserialize(data, name)
        if kind == "wat":
            try:
                data = bytes(wasmtime.wat2wasm(data.decode("utf-8", "replace")))
            except wasmtime.WasmtimeError as exc:
                raise ModuleError(f"{name}: invalid WAT: {describe_load_error(exc)}") from None
        sha = hashlib.sha256(data).hexdigest()
        cached = self._cache.lookup(self._fingerprint, sha) if self._cache else None
        if cached is not None:
            try:
                module = wasmtime.Module.deserialize_file(self._engine, str(cached))
                return LoadedModule(module, sha, name, True, 0.0)
            except wasmtime.WasmtimeError:
                assert self._cache is not None
                self._cache.evict(self._fingerprint, sha)
        if guard is not _DEFAULT_GUARD:
            guard.check_code(data, name)
        start = time.perf_counter()
        try:
            with progress(f"compiling {name} ({len(data) / 1e6:.1f} MB, once per engine "
                          "configuration)"):
                module = wasmtime.Module(self._engine, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"{name}: invalid WebAssembly: {describe_load_error(exc)}") from None
        compile_ms = (time.perf_counter() - start) * 1000
        if self._cache is not None:
            self._cache.store(self._fingerprint, sha, bytes(module.serialize()))
        return LoadedModule(module, sha, name, False, compile_ms)

    def _deserialize(self, data: bytes, name: str) -> LoadedModule:
        try:
            module = wasmtime.Module.deserialize(self._engine, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(
                f"{name}: this .cwasm was compiled by another engine configuration or wasmtime "
                f"version ({describe_load_error(exc)}); recompile it with `stockade compile` "
                "using the same profile"
            ) from None
        return LoadedModule(module, hashlib.sha256(data).hexdigest(), name, True, 0.0)

    def digest(self, path: Path) -> str:
        """The sha256 `load_path` would report for `path`, without compiling: from the stat
        index when the file is unchanged, else by hashing it (`.wat` as its binary).
        Raises ModuleNotFound or ModuleError."""
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ModuleNotFound(f"{path}: no such module file") from None
        except OSError as exc:
            raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
        key = self._stat_key(path, info)
        if key is not None:
            try:
                return key.read_text().strip()
            except OSError:
                pass
        _DEFAULT_GUARD.check_size(info.st_size, str(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
        if sniff_kind(data[:64], path.name) == "wat":
            try:
                data = bytes(wasmtime.wat2wasm(data.decode("utf-8", "replace")))
            except wasmtime.WasmtimeError as exc:
                raise ModuleError(f"{path.name}: invalid WAT: {describe_load_error(exc)}") from None
        sha = hashlib.sha256(data).hexdigest()
        self._remember_stat(path, info, sha)
        return sha

    # -- stat index: skip reading and hashing large modules on every cold start --------

    def _stat_key(self, path: Path, info: os.stat_result) -> Path | None:
        if self._cache is None:
            return None
        ident = f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_dev}"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return self._cache.root / "stat" / digest

    def _from_stat_index(self, path: Path, info: os.stat_result) -> LoadedModule | None:
        key = self._stat_key(path, info)
        if key is None:
            return None
        try:
            sha = key.read_text().strip()
        except OSError:
            return None
        assert self._cache is not None
        cached = self._cache.lookup(self._fingerprint, sha)
        if cached is None:
            return None
        try:
            module = wasmtime.Module.deserialize_file(self._engine, str(cached))
        except wasmtime.WasmtimeError:
            self._cache.evict(self._fingerprint, sha)
            return None
        return LoadedModule(module, sha, path.name, True, 0.0)

    def _remember_stat(self, path: Path, info: os.stat_result, sha: str) -> None:
        key = self._stat_key(path, info)
        if key is None:
            return
        try:
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_text(sha)
        except OSError:
            pass

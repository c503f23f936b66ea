"""Turn a path or bytes into a compiled wasmtime `Module`: `.wasm`, `.wat` or `.cwasm`.

wasmtime-py is imported where a module is compiled or mapped, not with this module:
`digest` and `file_ident` serve the C-API backend, which never imports it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import FastPathUnavailable, ModuleError, ModuleNotFound, PrecompiledRefused
from ..policy.units import format_size
from ..progress import progress
from ..records import FrozenRecord, record
from .cache import AotCache
from .grow import EXPORT as GROWN
from .seal import KeyUnavailable, SealError, host_key, unseal, vouched

TYPE_CHECKING = False
if TYPE_CHECKING:
    import wasmtime

    from .config import EngineConfig
    from .guard import CompileGuard

__all__ = ["LoadedModule", "ModuleLoader", "ModuleFile", "read_module", "MAX_MODULE_BYTES",
           "sniff_kind",
           "refuse_precompiled", "digest", "file_ident", "wat_binary"]

# A module larger than this is refused before it is read (an "enormous on disk" module).
MAX_MODULE_BYTES = 512 * 1024**2
# Text is converted in the caller's process, with ~55 bytes of memory per byte of it (a
# 64 MB .wat took 3.4 GB; refused memory aborts the process): text is for people.
MAX_WAT_BYTES = 8 * 1024**2
WASM_MAGIC = b"\0asm"
ELF_MAGIC = b"\x7fELF"
# Without a policy: only the absolute size cap; code shape is the policy's business.


@functools.cache
def _default_guard() -> CompileGuard:
    # The guard reads code shapes (`stockade.binary`): imported when a module is read,
    # not on a run served from the AoT cache.
    from .guard import CompileGuard

    return CompileGuard(MAX_MODULE_BYTES, MAX_MODULE_BYTES, 2**32)


class ModuleFile:
    """A module file opened once, for every backend: what is decided about it (a regular
    file, its size, its identity for the stat index) comes from `fstat` of the opened
    descriptor, and `read` reads that same descriptor, at most `limit` + 1 bytes, so a
    file that grows after the check, a FIFO, a device or a huge sparse file never costs
    more than the limit. Raises ModuleNotFound or ModuleError (one line each); a context
    manager closing the descriptor."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        try:
            # Non-blocking: opening a FIFO for reading would wait for a writer.
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise ModuleNotFound(f"{path}: no such module file") from None
        except OSError as exc:
            raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            self.info = os.fstat(self._fd)
            if not stat.S_ISREG(self.info.st_mode):
                raise ModuleError(f"{path}: not a regular file; give a .wasm, .wat or .cwasm "
                                  "file")
            if self.info.st_size > limit:
                raise ModuleError(  # the words of `CompileGuard.check_size`
                    f"{path}: {format_size(self.info.st_size)} is larger than this policy's "
                    f"module size limit of {format_size(limit)}")
        except BaseException:
            os.close(self._fd)
            raise

    def ident(self) -> str:
        """`file_ident` of the opened file."""
        return file_ident(self.path, self.info)

    def read(self) -> bytes:
        """The file's bytes from the opened descriptor; ModuleError past the limit (a file
        that grew since it was opened) or on a read error."""
        chunks: list[bytes] = []
        left = self.limit + 1
        try:
            while left > 0:
                chunk = os.read(self._fd, min(left, 1 << 24))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise ModuleError(f"{self.path}: cannot read: {exc.strerror}") from None
        if left <= 0:
            raise ModuleError(f"{self.path}: holds more than the module size limit of "
                              f"{format_size(self.limit)} (more than its size said, or it "
                              "grew while it was read)")
        return b"".join(chunks)

    def close(self) -> None:
        """Close the descriptor. Safe twice."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> ModuleFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_module(path: Path, limit: int = MAX_MODULE_BYTES) -> bytes:
    """A module file's bytes through `ModuleFile` (a regular file, at most `limit`
    bytes). Raises ModuleNotFound or ModuleError."""
    with ModuleFile(path, limit) as file:
        return file.read()


@record(frozen=True, init=False, repr=False, eq=False)
class LoadedModule(FrozenRecord):
    """A compiled module ready to instantiate.

    `sha256` is the digest of the module's bytes (of the `.cwasm` file itself for
    precompiled input); `from_cache` tells whether the AoT cache spared a compile;
    `precompiled` marks native code the caller supplied (a `.cwasm`), which only callers
    that allow precompiled input may run; `tripwire` marks code rewritten with a tripwire
    (`engine.tripwire`), whose runs must arm it. `exports` are the module's as given:
    `module.exports` also shows what the rewritings added. A frozen record
    (`stockade.records`).
    """

    module: wasmtime.Module
    sha256: str
    name: str
    from_cache: bool
    compile_ms: float
    precompiled: bool = False
    tripwire: bool = False

    def __init__(self, module: wasmtime.Module, sha256: str, name: str, from_cache: bool,
                 compile_ms: float, precompiled: bool = False, tripwire: bool = False
                 ) -> None:
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "from_cache", from_cache)
        object.__setattr__(self, "compile_ms", compile_ms)
        object.__setattr__(self, "precompiled", precompiled)
        object.__setattr__(self, "tripwire", tripwire)

    @property
    def exports(self) -> list[wasmtime.ExportType]:
        """The exports of the module as given, without what the rewritings added (the
        tripwire's page and start, the refused grows' global)."""
        added = {GROWN}
        if self.tripwire:
            from .trip import EXPORT, START

            added |= {EXPORT, START}
        return [export for export in self.module.exports if export.name not in added]


def refuse_precompiled(name: str, sha256: str = "") -> PrecompiledRefused:
    """The error for a `.cwasm` given without the opt-in (one line, naming the flag)."""
    return PrecompiledRefused(
        f"{name}: a .cwasm is native code and is refused by default; pass "
        "--allow-precompiled (API: allow_precompiled=True; manifest: allow_precompiled = "
        "true) to run one made by `stockade compile` on this host", sha256)


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
    (path, size, mtime, ctime, inode) to the module's sha256, then the `.cwasm` is
    MAC-checked and mapped in. A `.cwasm` input loads only with `allow_precompiled` and a
    MAC this host's key verifies (`key` returns it; tests pass another).
    """

    def __init__(self, engine: wasmtime.Engine, config: EngineConfig, cache: AotCache | None,
                 key: Callable[[], bytes] = host_key) -> None:
        self._engine = engine
        self._settings = config.settings()  # what a compiler child configures its engine by
        self._fingerprint = config.fingerprint()
        self._cache = cache
        self._key = key
        # Modules are rewritten with a tripwire before compiling; input that cannot be
        # (a .cwasm, code the rewriting does not know) raises tripwire.Unsupported.
        self._tripwire = config.tripwire

    def load_path(self, path: Path, guard: CompileGuard | None = None, *,
                  allow_precompiled: bool = False) -> LoadedModule:
        """Load a module file. Raises ModuleNotFound, ModuleError (also when `guard`
        refuses it) or PrecompiledRefused."""
        sizes = guard or _default_guard()
        with ModuleFile(path, sizes.max_module_size) as file:
            info = file.info
            hit = self._from_stat_index(path, info)
            if hit is not None:
                return hit
            data = file.read()
        loaded = self.load_bytes(data, path.name, guard, allow_precompiled=allow_precompiled)
        if not loaded.precompiled:
            self._remember_stat(path, info, loaded.sha256)
        return loaded

    def load_bytes(self, data: bytes, name: str = "<bytes>",
                   guard: CompileGuard | None = None, *,
                   allow_precompiled: bool = False) -> LoadedModule:
        """Load a module from memory. Raises ModuleError or PrecompiledRefused."""
        explicit = guard is not None
        guard = guard or _default_guard()
        guard.check_size(len(data), name)
        import wasmtime

        from .traps import describe_load_error

        kind = sniff_kind(data[:64], name)
        if kind == "cwasm":
            if not allow_precompiled:
                raise refuse_precompiled(name, hashlib.sha256(data).hexdigest())
            if self._tripwire:
                from .tripwire import Unsupported

                raise Unsupported("precompiled code cannot be rewritten")
            return self._deserialize(data, name)
        if kind == "wat":
            data = wat_binary(data, name)
        sha = hashlib.sha256(data).hexdigest()
        cached = self._from_cache(sha, name)
        if cached is not None:
            return cached
        from .compiler import compile_checked, compile_in_child, compiles_in_child

        engine = self._engine
        checked = guard if explicit else None
        start = time.perf_counter()
        code = None
        with progress(f"compiling {name} ({len(data) / 1e6:.1f} MB, once per engine "
                      "configuration)"):
            if compiles_in_child():
                code = compile_in_child(self._settings, data, name, checked, self._tripwire)
                try:
                    module = wasmtime.Module.deserialize(engine, code)
                except wasmtime.WasmtimeError as exc:  # another wasmtime in the child?
                    raise ModuleError(f"{name}: the compiler's code does not load: "
                                      f"{describe_load_error(exc)}") from None
            else:
                module = compile_checked(engine, data, name, checked, self._tripwire)
        compile_ms = (time.perf_counter() - start) * 1000
        if self._cache is not None:
            self._cache.store(self._fingerprint, sha,
                              code if code is not None else bytes(module.serialize()))
        return LoadedModule(module, sha, name, False, compile_ms, tripwire=self._tripwire)

    def _from_cache(self, sha: str, name: str) -> LoadedModule | None:
        """The module from a verified cache entry, or None (see `AotCache.open`)."""
        if self._cache is None:
            return None
        import wasmtime

        with self._cache.open(self._fingerprint, sha) as entry:
            if entry is None:
                return None
            try:
                module = wasmtime.Module.deserialize_file(self._engine, entry)
            except wasmtime.WasmtimeError:
                module = None
        if module is None:
            self._cache.evict(self._fingerprint, sha)
            return None
        return LoadedModule(module, sha, name, True, 0.0, tripwire=self._tripwire)

    def _deserialize(self, data: bytes, name: str) -> LoadedModule:
        import wasmtime

        from .traps import describe_load_error

        sha = hashlib.sha256(data).hexdigest()
        # The MAC is checked before wasmtime parses a byte of this native code.
        try:
            # A worker holds only its scope's key: its parent vouched for the files this
            # host sealed (`seal.vouch_for`); anything else is judged by the MAC.
            end = vouched(data, self._fingerprint)
            if end is None:
                end = unseal(data, self._fingerprint, "cwasm", self._key())
        except KeyUnavailable as exc:
            raise PrecompiledRefused(
                f"{name}: refused: this host's key cannot be used: {exc.reason}", sha) from None
        except SealError as exc:
            raise PrecompiledRefused(
                f"{name}: refused: {exc.reason}; compile the .wasm again with `stockade "
                "compile` (same --profile and --wasm-gc) on this host", sha) from None
        try:
            module = wasmtime.Module.deserialize(self._engine, data[:end])
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(
                f"{name}: this .cwasm was compiled by another engine configuration or wasmtime "
                f"version ({describe_load_error(exc)}); recompile it with `stockade compile` "
                "using the same profile (and --wasm-gc, when it was given)"
            ) from None
        return LoadedModule(module, sha, name, True, 0.0, precompiled=True)

    def digest(self, path: Path, limit: int = MAX_MODULE_BYTES) -> str:
        """The sha256 `load_path` would report for `path` (see `digest`)."""
        return digest(path, self._cache, limit)

    # -- stat index: skip reading and hashing large modules on every cold start --------

    def _from_stat_index(self, path: Path, info: os.stat_result) -> LoadedModule | None:
        if self._cache is None:
            return None
        sha = self._cache.recall(file_ident(path, info))
        return None if sha is None else self._from_cache(sha, path.name)

    def _remember_stat(self, path: Path, info: os.stat_result, sha: str) -> None:
        if self._cache is not None:
            self._cache.remember(file_ident(path, info), sha)


def digest(path: Path, cache: AotCache | None, limit: int = MAX_MODULE_BYTES) -> str:
    """The sha256 a load of `path` reports, without compiling: from `cache`'s stat index
    when the file is unchanged, else by hashing it (`.wat` as its binary), read up to
    `limit` bytes. Raises ModuleNotFound or ModuleError."""
    with ModuleFile(path, limit) as file:
        info = file.info
        if cache is not None:
            remembered = cache.recall(file_ident(path, info))
            if remembered is not None:
                return remembered
        data = file.read()
    if sniff_kind(data[:64], path.name) == "wat":
        data = wat_binary(data, path.name)
    sha = hashlib.sha256(data).hexdigest()
    if cache is not None:
        cache.remember(file_ident(path, info), sha)
    return sha


def wat_binary(data: bytes, name: str) -> bytes:
    """The binary of WebAssembly text `data` (UTF-8; bad bytes replaced). Through the
    C API when the fast path loads (no wasmtime-py import), else wasmtime-py's
    `wat2wasm`: the same function of the same library. Raises ModuleError, also for text
    past `MAX_WAT_BYTES`."""
    if len(data) > MAX_WAT_BYTES:
        raise ModuleError(f"{name}: {format_size(len(data))} of WebAssembly text is past the "
                          f"{format_size(MAX_WAT_BYTES)} Stockade converts; convert it to a "
                          "binary module first (`wasm-tools parse`)")
    text = data.decode("utf-8", "replace")
    try:
        from .fastpath import wat2wasm
    except FastPathUnavailable:
        import wasmtime

        from .traps import describe_load_error

        try:
            return bytes(wasmtime.wat2wasm(text))
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"{name}: invalid WAT: {describe_load_error(exc)}") from None
    return wat2wasm(text, name)


def file_ident(path: Path, info: os.stat_result) -> str:
    """What identifies a file's contents without reading it. The ctime changes on every
    write and cannot be set back by its owner, unlike the mtime."""
    return (f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:"
            f"{info.st_ino}:{info.st_dev}")

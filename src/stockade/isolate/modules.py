"""Modules cross into a worker as bytes: the parent reads the file, the worker compiles.

The worker cannot open the caller's files (Landlock, and a uid of its own), so the
parent opens the module file (never blocking on a FIFO, a regular file only, no larger
than the policy allows) and sends its identity (device, inode, size, mtime) followed by
its bytes, straight from the file (sendfile: a large module costs the parent no
memory). A worker keeps the modules it loaded by that identity, so a reused worker gets
only the identity for a file it has seen; when it has let the module go it asks for
the bytes again (`resend`), once.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModuleError, ModuleNotFound
from ..fileid import FileKey, file_key

if TYPE_CHECKING:
    from .backend import WorkerBackend

__all__ = ["ModuleFile", "open_module", "ModuleMemo", "FALLBACK"]

# `ModuleMemo.load`'s answer for a module the worker's backend leaves to wasmtime-py.
FALLBACK = object()


@dataclass(frozen=True)
class ModuleFile:
    """A module file as the parent saw it: `name` (the file name, as results report
    it), `path` (as the caller gave it, for errors), `key` (`file_key`), `size`, and
    `data`: its bytes, or None when the worker already holds it or the file is over the
    size limit. With `attached`, the bytes follow the request
    as a raw frame of `size` bytes (sent from the file, never copied into the parent)."""

    name: str
    path: str
    key: FileKey
    size: int
    data: bytes | None
    attached: bool = False


def open_module(path: Path, max_size: int, held: bool) -> tuple[ModuleFile, int | None]:
    """Open `path` for a worker: the request's `ModuleFile`, and the open descriptor
    whose bytes must follow it (None with `held`, when the worker has this file's
    identity already, or when it is larger than `max_size`: the worker then refuses it
    with the policy's message). The caller closes the descriptor. Raises
    ModuleNotFound or ModuleError with the in-process sandbox's wording."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ModuleNotFound(f"{path}: no such module file") from None
    except OSError as exc:
        raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ModuleError(f"{path}: not a regular file")
    key = file_key(info)
    if held or info.st_size > max_size:
        os.close(fd)
        return ModuleFile(path.name, str(path), key, info.st_size, None), None
    return ModuleFile(path.name, str(path), key, info.st_size, None, attached=True), fd


class ModuleMemo:
    """The worker's loaded modules by file identity, the `capacity` most recent."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._loaded: OrderedDict[FileKey | bytes, Any] = OrderedDict()

    def load(self, backend: WorkerBackend, module: ModuleFile | bytes) -> Any:
        """The module compiled (or from the AoT cache); None when the parent left the
        bytes out and this worker does not hold them; `FALLBACK` when `backend` leaves
        the module to wasmtime-py's (see `isolate.backend`). Raises ModuleError. Module
        bytes are kept by their digest, as files by their identity: loaded again for
        every run, each kept by its engine, a worker ran out of descriptors at its
        ~300th run of bytes and failed every run after (found by review)."""
        if isinstance(module, bytes):
            import hashlib

            digest = hashlib.sha256(module).digest()
            loaded = self._loaded.get(digest)
            if loaded is None:
                loaded = backend.load(module, "<bytes>")
                if loaded is None:
                    return FALLBACK
                self._keep(digest, loaded)
            else:
                self._loaded.move_to_end(digest)
            return loaded
        if module.data is None:
            if module.size > backend.policy.limits.max_module_size:
                from ..engine.guard import CompileGuard

                CompileGuard(backend.policy.limits.max_module_size, 0, 0).check_size(
                    module.size, module.path)
            loaded = self._loaded.get(module.key)
            if loaded is not None:
                self._loaded.move_to_end(module.key)
            return loaded
        loaded = backend.load(module.data, module.name)
        if loaded is None:
            return FALLBACK
        self._keep(module.key, loaded)
        return loaded

    def _keep(self, key: Any, loaded: Any) -> None:
        """Keep `loaded` under `key`; the least recent past `capacity` is forgotten and,
        a fast-path module, freed (its engine kept it, and its memory, until closed)."""
        self._loaded[key] = loaded
        while len(self._loaded) > self.capacity:
            _, dropped = self._loaded.popitem(last=False)
            close = getattr(dropped, "close", None)
            if close is not None and dropped is not loaded:
                close()


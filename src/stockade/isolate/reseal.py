"""`Resealer`: this host's compiled code, handed to isolated workers' AoT scope.

An isolated worker holds only its scope's key (`seal.scoped_key`) and writes only its
scope's cache (`AotCache.scope`), so code that took it over can forge native code only
its own scope loads. Left alone, such a worker would compile every module afresh (a
large one, CPython, past the load timeout on a busy machine) although this host's cache
holds it: before a module is sent, the parent, which holds this host's key, copies the
host's entry for it into the scope (`AotCache.reseal`: verified under the host's key,
sealed with the scope's, written atomically without following links).

Kept off the hot path: a module file already seen by this sandbox costs one `stat`
(the memo of file identities); a new one its digest from the host's stat index and an
`lstat` of the scope's entry. The entry is read and copied only when the scope has none.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.cache import AotCache
from ..engine.loader import digest
from ..errors import StockadeError
from ..fileid import path_key
from ..policy import Limits
from .backend import worker_engine_config

if TYPE_CHECKING:
    from ..sandbox.backend import Backend

__all__ = ["Resealer"]

_MEMO = 256  # module versions remembered as handled, per sandbox


class Resealer:
    """Copies `host`'s entries into the scope `scope` of workers running under `limits`
    (`prepare`, before a module is sent). Not thread-safe: its sandbox serialises runs."""

    def __init__(self, host: AotCache, scope: str, limits: Limits) -> None:
        self.host = host
        self.scope = scope
        self._limits = limits
        self._fingerprints: dict[tuple[Backend, bool], str] = {}
        self._done: OrderedDict[tuple[object, str], None] = OrderedDict()

    def prepare(self, module: str | Path | bytes, backend: Backend,
                process_deadline: bool) -> bool:
        """Make sure the scope holds the host's entry for `module`, as compiled by a
        worker running `backend` whose engine keeps the deadline by process
        (`process_deadline`) or not. True when an entry was copied; never raises (a
        worker without it compiles)."""
        fingerprint = self._fingerprint(backend, process_deadline)
        if isinstance(module, bytes):
            if not module.startswith(b"\0asm"):
                return False  # native code has no cache entry; WAT is rare as bytes
            sha = hashlib.sha256(module).hexdigest()
            return self._copy((sha, fingerprint), fingerprint, sha)
        version = path_key(module)
        if version is None:
            return False  # the worker's request reports it
        memo = (version, fingerprint)
        if memo in self._done:
            return False
        digest = self._digest(Path(module))
        return False if digest is None else self._copy(memo, fingerprint, digest)

    def _copy(self, memo: tuple[object, str], fingerprint: str, sha: str) -> bool:
        if memo in self._done:
            return False
        # A fresh view of the scope each time: its workers write it, so a directory found
        # trusted once is checked again (a link planted since is set aside).
        copied = self.host.reseal(self.host.scope(self.scope), fingerprint, sha)
        self._done[memo] = None
        while len(self._done) > _MEMO:
            self._done.popitem(last=False)
        return copied

    def _fingerprint(self, backend: Backend, process_deadline: bool) -> str:
        found = self._fingerprints.get((backend, process_deadline))
        if found is None:
            config = worker_engine_config(self._limits, backend, process_deadline)
            found = self._fingerprints[(backend, process_deadline)] = config.fingerprint()
        return found

    def _digest(self, path: Path) -> str | None:
        """The module's sha256 (`loader.digest`: from the host's stat index, else read once
        within the policy's size limit and remembered); None for a file the worker will
        refuse anyway. A `.cwasm` gets its own digest, which names no cache entry."""
        try:
            return digest(path, self.host, self._limits.max_module_size)
        except StockadeError:
            return None

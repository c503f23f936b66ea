"""`AotCache`: compiled modules on disk, keyed by module sha256 and engine fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["AotCache"]


class AotCache:
    """A directory of `<fingerprint>/<sha256>.cwasm` files.

    Writes are atomic (temp file + rename), so concurrent processes never see half a
    file. A cache that cannot be written (read-only disk) is skipped silently: the
    module is then compiled in memory each time.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, fingerprint: str, sha256: str) -> Path:
        """Where the compiled form of a module lives."""
        return self.root / fingerprint / f"{sha256}.cwasm"

    def lookup(self, fingerprint: str, sha256: str) -> Path | None:
        """The cached file, or None."""
        path = self.path(fingerprint, sha256)
        return path if path.is_file() else None

    def store(self, fingerprint: str, sha256: str, data: bytes) -> Path | None:
        """Save compiled bytes; returns the path, or None when the cache is not writable."""
        target = self.path(fingerprint, sha256)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except OSError:
            return None
        return target

    def evict(self, fingerprint: str, sha256: str) -> None:
        """Remove an entry that failed to load (corrupt or stale)."""
        try:
            self.path(fingerprint, sha256).unlink()
        except OSError:
            pass

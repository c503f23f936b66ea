"""Trust policies applied: which modules may run at all.

`refusal` answers for one module's bytes under a `Trust`: None when it may run, else one
line naming the key ids found and the key ids trusted. Trusted keys are read once per
set of key files (re-read when a file changes), so a gateway pays the key parsing once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..policy.model import Trust
from .keys import PublicKey, load_public_keys
from .signing import Verification, verify_module

__all__ = ["refusal", "trusted_keys", "check"]

_lock = threading.Lock()
_cache: dict[tuple[tuple[str, int, int], ...], list[PublicKey]] = {}


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (str(path), -1, -1)
    return (str(path), info.st_mtime_ns, info.st_size)


def trusted_keys(paths: tuple[Path, ...]) -> list[PublicKey]:
    """The public keys of `paths` (files or directories). Raises KeyFileError."""
    stamp = tuple(_stamp(p) for p in paths)
    with _lock:
        cached = _cache.get(stamp)
    if cached is not None:
        return cached
    keys = [key for path in paths for key in load_public_keys(path)]
    with _lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[stamp] = keys
    return keys


def check(data: bytes, trust: Trust) -> Verification:
    """Verify `data` against the keys `trust` names."""
    return verify_module(data, trusted_keys(trust.keys))


def refusal(data: bytes, trust: Trust) -> str | None:
    """Why `trust` refuses these module bytes, or None. Raises KeyFileError for a key
    file that cannot be read (a configuration error, never a silent pass)."""
    if not trust.require_signature:
        return None
    verification = check(data, trust)
    return None if verification.ok else f"refused: {verification.describe()}"

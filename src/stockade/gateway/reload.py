"""`stockade serve --reload`: reload when the manifest or a function's module changes.

`FileWatcher` polls (no inotify dependency, works on every filesystem) the size, mtime
and inode of each watched file. A change is acted on once the file has stayed the same
for one more poll, so a module still being written by a compiler is not loaded half
done; a reload that fails (a broken manifest, a module that does not compile) keeps the
previous functions serving, and the next change tries again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from ..fileid import FileKey, path_key
from .manifest import Manifest

__all__ = ["FileWatcher", "watched_files", "POLL_SECONDS"]

POLL_SECONDS = 0.5
Stamp = FileKey | None  # `fileid.path_key`; None: missing


def watched_files(source: Path, manifest: Manifest | None) -> list[Path]:
    """The manifest file and every local module it names."""
    files = [source]
    if manifest is not None:
        files += [spec.module for spec in manifest.functions]
    return list(dict.fromkeys(files))


class FileWatcher:
    """Reports, at most every `interval` seconds, whether watched files changed."""

    def __init__(self, files: Iterable[Path], interval: float = POLL_SECONDS) -> None:
        self.interval = interval
        self._stamps: dict[Path, Stamp] = {}
        self._pending: dict[Path, Stamp] | None = None
        self._next = 0.0
        self.watch(files)

    def watch(self, files: Iterable[Path]) -> None:
        """Watch `files` from now on, as they are now."""
        self._stamps = {path: path_key(path) for path in files}
        self._pending = None

    def changed(self, now: float | None = None) -> list[Path]:
        """The files that changed and have since stayed the same for one poll (empty
        until then, and between polls)."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return []
        self._next = now + self.interval
        current = {path: path_key(path) for path in self._stamps}
        if current == self._stamps:
            self._pending = None
            return []
        if current != self._pending:  # still changing: look again at the next poll
            self._pending = current
            return []
        changed = [path for path, stamp in current.items() if stamp != self._stamps[path]]
        self._stamps, self._pending = current, None
        return changed

"""Where Stockade keeps its files: the AoT cache and the state directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "state_dir"]


def cache_dir() -> Path:
    """`$STOCKADE_CACHE_DIR`, else `$XDG_CACHE_HOME/stockade`, else `~/.cache/stockade`."""
    explicit = os.environ.get("STOCKADE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stockade"


def state_dir() -> Path:
    """`$STOCKADE_STATE_DIR`, else `$XDG_STATE_HOME/stockade`, else `~/.local/state/stockade`."""
    explicit = os.environ.get("STOCKADE_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stockade"

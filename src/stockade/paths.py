"""Where Stockade keeps its files: the AoT cache, the state directory and the config
directory (this host's keys, kept apart from the cache they authenticate); and where
its own package was imported from, for the Python processes it starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["cache_dir", "config_dir", "state_dir", "PACKAGE_ROOT", "import_path"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding `stockade`


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


def config_dir() -> Path:
    """`$STOCKADE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/stockade`, else `~/.config/stockade`."""
    explicit = os.environ.get("STOCKADE_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stockade"


def module_command(module: str, *args: str, python: str | None = None) -> list[str]:
    """The command line of Stockade's `module` in a fresh interpreter (`python`, else
    `sys.executable` as it is now): never importing from its working directory (`-P`,
    where whoever can write could run code in it), so its environment carries
    `import_path()`."""
    return [python or sys.executable, "-P", "-m", module, *args]


def import_path() -> str:
    """`PYTHONPATH` for a Python process Stockade starts (with `-P`, never from its
    working directory): this package's root first, so it imports the same Stockade;
    then this process's absolute entries (an empty or relative one is the working
    directory again)."""
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join([PACKAGE_ROOT, *(entry for entry in inherited
                                            if os.path.isabs(entry))])

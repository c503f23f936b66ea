"""wasmtime's shared library, found and loaded without importing wasmtime-py.

`import wasmtime` costs about as much as a whole `stockade run` may: most of it is
wasmtime-py's generated ctypes bindings (thousands of prototypes), while `ctypes.CDLL`
of the same `libwasmtime.so` costs almost nothing. The C-API fast path binds only the
functions it calls, so it needs the library's path, not the package: `find_spec` names
the package's directory without executing it. The path is the one wasmtime-py itself
loads (`wasmtime/_ffi.py`), so a process using both maps the library once.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from importlib.util import find_spec
from pathlib import Path

from ..errors import FastPathUnavailable

__all__ = ["library_path", "load_library", "installed_version"]

# Platform directory and file name per sys.platform, as wasmtime/_ffi.py lays them out.
_NAMES = {"linux": "_libwasmtime.so", "darwin": "_libwasmtime.dylib", "win32": "_wasmtime.dll"}
_MACHINES = {"AMD64": "x86_64", "arm64": "aarch64", "ARM64": "aarch64"}


def _package_dir() -> Path:
    spec = find_spec("wasmtime")
    if spec is None or spec.origin is None:
        raise FastPathUnavailable("wasmtime-py is not installed (pip install wasmtime)")
    return Path(spec.origin).parent


@functools.cache
def library_path() -> Path:
    """The path of the `libwasmtime` wasmtime-py ships. Raises FastPathUnavailable when
    wasmtime-py is not installed or has no library for this platform."""
    name = _NAMES.get(sys.platform)
    machine = os.uname().machine if hasattr(os, "uname") else ""
    machine = _MACHINES.get(machine, machine)
    if name is None:
        raise FastPathUnavailable(f"wasmtime has no library for {sys.platform}")
    path = _package_dir() / f"{sys.platform}-{machine}" / name
    if not path.is_file():
        raise FastPathUnavailable(f"wasmtime's library is missing: {path}")
    return path


@functools.cache
def load_library() -> ctypes.CDLL:
    """The loaded library (once per process). Raises FastPathUnavailable."""
    try:
        return ctypes.CDLL(str(library_path()))
    except OSError as exc:
        raise FastPathUnavailable(f"cannot load {library_path()}: {exc}") from None


@functools.cache
def installed_version() -> str:
    """The installed wasmtime-py version, from its dist-info directory's name (reading
    package metadata through importlib costs ~25 ms of imports)."""
    site = _package_dir().resolve().parent
    with os.scandir(site) as entries:  # not `Path.glob`: it compiles a pattern first
        for entry in entries:
            if entry.name.startswith("wasmtime-") and entry.name.endswith(".dist-info"):
                return entry.name.removeprefix("wasmtime-").removesuffix(".dist-info")
    from importlib.metadata import version  # an unusual layout: ask the slow way

    return version("wasmtime")

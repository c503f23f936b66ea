"""First-sight copies of modules, for attacks whose cost is paid when a module is loaded.

An attacker never sends the same file twice, so a compile bomb served from the AoT
cache, or a huge module found in the cache's stat index, would measure nothing.
`fresh_copy` with `salt` appends a custom section with random bytes (a new digest, the
same code: compiled again); with `link` it makes a new hard link (a new path, the same
bytes: read and hashed again, compiled form reused, no data copied). `forget_compiled`
drops a salted copy's compiled form from the cache so repeated suites do not fill it.
`unloadable` tells a broken guest from one the policy refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..engine import AotCache
from ..paths import cache_dir

__all__ = ["fresh_copy", "forget_compiled", "unloadable"]

_SECTION_NAME = b"stockade.attack.salt"


def fresh_copy(module: Path, target: Path, how: str) -> Path:
    """Make `target` a first-sight copy of `module` (`how` is `link` or `salt`, see the
    module docstring); returns `target`. A link across file systems becomes a copy."""
    if how == "link":
        try:
            os.link(module, target)
        except OSError:
            shutil.copyfile(module, target)
        return target
    shutil.copyfile(module, target)
    payload = bytes([len(_SECTION_NAME)]) + _SECTION_NAME + os.urandom(16)
    with target.open("ab") as out:
        out.write(b"\x00" + bytes([len(payload)]) + payload)  # both lengths fit one byte
    return target


def forget_compiled(fingerprint: str, sha256: str) -> None:
    """Remove one module's compiled form from the AoT cache (missing is fine)."""
    AotCache(cache_dir()).evict(fingerprint, sha256)


def unloadable(module: Path) -> str | None:
    """Why `module` is not a module wasmtime would load under any policy (unreadable,
    not WebAssembly, truncated, invalid), in one line, or None when its validator
    accepts it (with Wasm GC allowed, as a policy may): then a refused load was the
    policy's doing."""
    from ..engine.loader import WASM_MAGIC, read_module
    from ..engine.validity import engine_verdict
    from ..errors import StockadeError

    try:
        data = read_module(module)
    except StockadeError as exc:
        return exc.message
    if not data.startswith(WASM_MAGIC):  # guests are binaries: no text, no .cwasm
        return f"{module.name}: not a WebAssembly binary (no \\0asm header)"
    error = engine_verdict(data).error
    if error is not None:
        return f"{module.name}: invalid WebAssembly: {error}"
    # Valid but nothing to run: refused by every sandbox, judged on its (zero) numbers
    # it passed as contained (found by review).
    if not _has_start(data):
        return f"{module.name}: no _start function export (not a WASI command)"
    return None


def _has_start(data: bytes) -> bool:
    from ..binary import MalformedModule, read_exports, sections

    try:
        return any(export.name == "_start" and export.kind == "func"
                   for section in sections(data) if section.kind == "export"
                   for export in read_exports(data, section))
    except MalformedModule:
        return False

"""Where Stockade's own guest modules are: the attack suite's and the benchmark's.

An installed wheel carries them as package data under `stockade/_guests/` (built by the
wheel's build hook, see `setup.py`): the attack modules, the benchmark's modules and
their native twins. Modules too big for a wheel (the 160 MiB `huge_module`, the 48 MiB
`huge_data`, the compile bombs) travel as their generator scripts (`gen_NAME.py`) and are
generated at first use into the cache directory. In a source checkout the same files are
found in `build/` (`make guests`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import ModuleError
from .paths import cache_dir

__all__ = ["PACKAGED", "build_root", "guests_root", "guest_path"]

# The package data directory of an installed wheel (absent in a checkout).
PACKAGED = Path(__file__).resolve().parent / "_guests"
# A checkout's build directory: src/stockade/ -> the repository root.
_CHECKOUT_BUILD = Path(__file__).resolve().parents[2] / "build"
_GENERATE_TIMEOUT = 300.0


def build_root() -> Path:
    """The directory holding `guests/` and `native/`: the wheel's package data when
    installed, else the checkout's `build/`, else `./build`."""
    if (PACKAGED / "guests").is_dir():
        return PACKAGED
    if (_CHECKOUT_BUILD / "guests").is_dir():
        return _CHECKOUT_BUILD
    return Path("build")


def guests_root() -> Path:
    """The directory of built guest modules (`build_root() / "guests"`)."""
    return build_root() / "guests"


def guest_path(relative: str, root: Path | None = None) -> Path:
    """The path of guest module `relative` (e.g. `attacks/cpu_loop.wasm`) under `root`
    (default `guests_root()`). A module that is not there but has a generator next to
    where it would be (`gen_NAME.py` for `NAME.wasm`) is generated once into the cache;
    otherwise the missing path is returned for the caller to report. Raises ModuleError
    when a generator fails."""
    base = root if root is not None else guests_root()
    path = base / relative
    if path.exists():
        return path
    generator = path.parent / f"gen_{path.stem}.py"
    if path.suffix != ".wasm" or not generator.is_file():
        return path
    return _generated(generator, path.name)


def _generated(generator: Path, name: str) -> Path:
    """Run `generator` once into a cache directory keyed by its digest; the module's path."""
    digest = hashlib.sha256(generator.read_bytes()).hexdigest()[:16]
    target_dir = cache_dir() / "guests" / f"{generator.stem}-{digest}"
    target = target_dir / name
    if target.exists():
        return target
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # Generated in a fresh directory and renamed into place: a crash or a concurrent
    # first use never leaves a half-written module under the final name.
    work = Path(tempfile.mkdtemp(prefix=f".{generator.stem}-", dir=target_dir.parent))
    try:
        done = subprocess.run([sys.executable, str(generator), str(work)],
                              cwd=generator.parent, capture_output=True, text=True,
                              timeout=_GENERATE_TIMEOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not (work / name).exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModuleError(f"{name}: generating it with {generator.name} failed: {last}")
        try:
            os.rename(work, target_dir)
        except OSError:
            if not target.exists():  # not a concurrent winner: a real failure
                raise
    except subprocess.TimeoutExpired:
        raise ModuleError(f"{name}: {generator.name} took more than "
                          f"{_GENERATE_TIMEOUT:g} s") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target

"""Build the fast path's native run (`src/stockade/engine/fastpath/libstockade_fastrun.so`) with the
system C compiler. Optional: without it the fast path runs its Python version, so a
missing compiler is reported, not fatal."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from build_guests import stale  # this folder is on the path of a script run from it

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "stockade" / "engine" / "fastpath" / "_native.c"
# Not `_native.so`: Python would take that for an extension module named `_native`.
TARGET = SOURCE.with_name("libstockade_fastrun.so")
FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-pthread"]


def main() -> int:
    if not stale(TARGET, SOURCE):
        print(f"build_native: {TARGET.name} up to date")
        return 0
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        print("build_native: no C compiler: the fast path will use its Python version")
        return 0
    partial = TARGET.with_name(TARGET.name + ".part")
    subprocess.run([compiler, *FLAGS, "-o", str(partial), str(SOURCE)], check=True)
    partial.replace(TARGET)
    print(f"build_native: built {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The wheel's build hook: the attack suite's and the benchmark's guests as package data.

Metadata lives in pyproject.toml. Building a wheel runs `scripts/build_guests.py
--package` (clang with wasi-libc and wasmtime needed at build time; incremental, so after
`make guests` it only copies), which puts the built modules, the benchmark's native
binaries and the generators of the huge modules into `stockade/_guests/`. The native
binaries make the wheel platform-specific.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent


class BuildWithGuests(build_py):
    """build_py, then the guests into the built package."""

    def run(self) -> None:
        package = Path(self.build_lib) / "stockade"
        if not self.editable_mode and package.is_dir():
            # pip builds in the tree: a module deleted from src/ would otherwise ship
            # from the previous build's copy.
            shutil.rmtree(package)
        super().run()
        if self.editable_mode:  # an editable install finds the checkout's build/
            return
        dest = package / "_guests"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_guests.py"),
                        "--package", str(dest)], check=True, cwd=ROOT)


class PlatformDistribution(Distribution):
    """Native benchmark binaries inside: tag the wheel for this platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithGuests}, distclass=PlatformDistribution)

"""`stockade new`: write a starter manifest and its example function (WAT, C or Python)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import click

from ..errors import UsageError
from ..regularfile import replace_file
from .paths import PathParam
from .templates import C_BUILD, HELLO_WAT, LANGUAGES, TEMPLATES, manifest

__all__ = ["new", "MANIFEST", "HELLO_WAT"]

# The same files as examples/stockade.toml and examples/hello.wat (a test pins this).
MANIFEST = manifest("wat")
BUILD_TIMEOUT = 120.0  # seconds the C template's build may take


@click.command()
@click.argument("directory", type=PathParam("directory"),
                default=Path("."))
@click.option("--lang", type=click.Choice(LANGUAGES), default="wat", show_default=True,
              help="The example function's language.")
@click.option("--python-wasm", "python_wasm", type=PathParam("file", "module file"),
              help="CPython for WASI to serve the Python handler with (default: "
                   "python.wasm beside the manifest).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def new(directory: Path, lang: str, python_wasm: Path | None, force: bool) -> None:
    """Write a starter stockade.toml and its hello function into DIRECTORY (default: .).

    \b
    --lang wat     hello.wat, served as it is (compiled on first use)
    --lang c       hello.c and a Makefile; built here with clang --target=wasm32-wasi
    --lang python  app/handler.py, run by CPython for WASI (--python-wasm PATH)

    \b
    Then:
      stockade serve --config DIRECTORY/stockade.toml --reload
      curl http://127.0.0.1:8080/hello
    """
    python = "python.wasm"
    if lang == "python" and python_wasm is not None:
        if not os.path.isfile(python_wasm):
            why = "not a regular file" if os.path.exists(python_wasm) else "no such file"
            raise UsageError(f"--python-wasm {python_wasm}: {why}")
        python = str(python_wasm.resolve())
    files = {directory / "stockade.toml": manifest(lang, python)}
    files.update({directory / name: text for name, text in TEMPLATES[lang].items()})
    # What the C build writes is checked with the rest, before anything is written.
    built = [directory / "hello.wasm"] if lang == "c" else []
    existing = [str(path) for path in [*files, *built] if _existing(directory, path)]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exists (use --force to overwrite)")
    for path, text in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A new file renamed into place: a link planted since the check is replaced,
            # never written through; an existing file keeps its mode, less the group's
            # and others' write (`serve` refuses a manifest others can rewrite: under
            # umask 002 the starter's own was refused).
            replace_file(path, text.encode(), mode=None, others_write=False)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    for path in files:
        click.echo(f"wrote {path}")
    if lang == "c":
        _build_c(directory)
    if lang == "python" and python_wasm is None:
        click.echo(f"next: put CPython for WASI at {directory / 'python.wasm'}, or run "
                   "`stockade new --lang python --python-wasm PATH --force`", err=True)
    click.echo(f"next: stockade serve --config {directory / 'stockade.toml'} --reload")


def _existing(directory: Path, path: Path) -> bool:
    """Whether `path` (inside `directory`) exists as a regular file. A symlink, FIFO,
    directory or device there, or on the way to it, is refused (UsageError), --force or
    not: writing through a link planted in a shared directory wrote where its planter
    chose (a dangling one even counted as no file), and opening a FIFO blocked.
    `directory` itself was named by the user and may be a link."""
    inside = path.relative_to(directory).parts
    for depth in range(1, len(inside) + 1):
        step = directory.joinpath(*inside[:depth])
        try:
            mode = os.lstat(step).st_mode
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        wanted = stat.S_ISREG if step == path else stat.S_ISDIR
        if not wanted(mode):
            raise UsageError(f"{step} is {_kind(mode)}: refused, even with --force (remove "
                             "it first)")
    return True


def _kind(mode: int) -> str:
    """What a file of `mode` is, in words."""
    for test, words in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
                        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "a regular file, not a directory" if stat.S_ISREG(mode) else "a device"


def _build_c(directory: Path) -> None:
    """Run the C template's build step; a missing compiler is a warning, a failed build
    an error naming the first compiler message."""
    if shutil.which(C_BUILD[0]) is None:
        click.echo(f"warning: {C_BUILD[0]} not found: install clang, lld and wasi-libc, then "
                   f"run `make -C {directory}`", err=True)
        return
    try:
        done = subprocess.run(C_BUILD, cwd=directory, capture_output=True,
                              timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise UsageError(f"building {directory / 'hello.wasm'} took more than "
                         f"{BUILD_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise UsageError(f"building {directory / 'hello.wasm'} failed: {first}")
    click.echo(f"built {directory / 'hello.wasm'} ({' '.join(C_BUILD)})")

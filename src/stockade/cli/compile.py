"""`stockade compile`: ahead-of-time compile a module to a `.cwasm` file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import ModuleError, UsageError
from .paths import PathParam

__all__ = ["compile_"]


@click.command("compile")
# OUTPUT is checked before compiling (`_check_output`): a link or device there too.
@click.argument("source", type=PathParam("module"))
@click.option("-o", "--output", type=PathParam("any", "output file"),
              help="Output file (default: SOURCE with .cwasm).")
@click.option("--profile", type=click.Choice(["strict", "default", "permissive"]),
              default="default", show_default=True,
              help="The engine configuration follows the profile (fuel, stack size).")
@click.option("--wasm-gc", is_flag=True,
              help="For runs with --wasm-gc: the Wasm GC and exception-handling proposals.")
def compile_(source: Path, output: Path | None, profile: str, wasm_gc: bool) -> None:
    """Compile SOURCE (.wasm or .wat) for this machine and wasmtime version.

    The .cwasm is sealed with this host's key (HMAC-SHA256, see SECURITY.md): only this
    user on this host can run it, with `stockade run --allow-precompiled` and the same
    --profile (and --wasm-gc). Deleting the key (`~/.config/stockade/aot.key`) revokes every .cwasm.
    """
    from ..display import printable
    from ..engine import CompileGuard, Engine, EngineConfig
    from ..engine.loader import ModuleFile, sniff_kind
    from ..engine.seal import KeyUnavailable, host_key, seal, strip
    from ..policy import profile as get_profile

    # Native code keeps its deadline by epochs: a tripwire is the rewriting of a module
    # this host compiles itself, which a .cwasm skips (`Engine.load`).
    chosen = get_profile(profile)
    limits = (chosen.with_limits(wasm_gc=True) if wasm_gc else chosen).limits
    config = EngineConfig.for_limits(limits, tripwire=False)
    guard = CompileGuard.for_limits(limits)
    # The bytes compiled are those of the file checked here: read once.
    with ModuleFile(source, guard.max_module_size) as file:
        data = file.read()
        info = file.info
    if sniff_kind(data[:64], source.name) == "cwasm":
        raise ModuleError(f"{source}: already compiled (a .cwasm is native code); compile "
                          "the .wasm or .wat it was made from")
    output = output or source.with_suffix(".cwasm")  # a regular file's name: never empty
    _check_output(output, info)
    try:
        key = host_key()
    except KeyUnavailable as exc:
        raise UsageError(f"cannot seal {output}: this host's key cannot be used: "
                         f"{exc.reason}") from None
    with Engine(config) as engine:
        # The profile's compile limits: a module the profile would refuse to run is not
        # compiled for it either (nor without any bound).
        loaded = engine.load(data, source.name, guard=guard)
        native = strip(bytes(loaded.module.serialize()))
        trailer = seal(native, engine.fingerprint, "cwasm", key)
    _write(output, native + trailer)
    click.echo(f"{printable(str(output))}: {len(native) / 1024:.0f} KiB, {config.describe()}, "
               f"sha256 {loaded.sha256[:16]}…, sealed for this host", err=True)


def _check_output(output: Path, source: os.stat_result) -> None:
    """Refuse, before compiling, an output that is the source itself (by any name: a
    hard link, another spelling; its module was replaced by native code) or that exists
    as anything but a regular file (`replace_file` would refuse it after the compile)."""
    from ..regularfile import replaceable

    try:  # through a link too: it would be refused below, but say why
        same = os.path.samestat(os.stat(output), source)
    except OSError:  # nothing there, or a dangling link
        same = False
    if same:
        raise UsageError(f"{output} is the module compiled: name another output (-o)")
    try:
        replaceable(output)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None


def _write(output: Path, data: bytes) -> None:
    """Write atomically through a private temp file beside `output` (mode 0600)."""
    from ..regularfile import replace_file

    try:
        replace_file(output, data)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None

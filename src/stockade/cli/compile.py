"""`stockade compile`: ahead-of-time compile a module to a `.cwasm` file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError

__all__ = ["compile_"]


@click.command("compile")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
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
    from ..engine import CompileGuard, Engine, EngineConfig
    from ..engine.seal import KeyUnavailable, host_key, seal, strip
    from ..policy import profile as get_profile

    # Native code keeps its deadline by epochs: a tripwire is the rewriting of a module
    # this host compiles itself, which a .cwasm skips (`Engine.load`).
    chosen = get_profile(profile)
    limits = (chosen.with_limits(wasm_gc=True) if wasm_gc else chosen).limits
    config = EngineConfig.for_limits(limits, tripwire=False)
    output = output or source.with_suffix(".cwasm")
    try:
        key = host_key()
    except KeyUnavailable as exc:
        raise UsageError(f"cannot seal {output}: this host's key cannot be used: "
                         f"{exc.reason}") from None
    with Engine(config) as engine:
        # The profile's compile limits: a module the profile would refuse to run is not
        # compiled for it either (nor without any bound).
        loaded = engine.load(source, guard=CompileGuard.for_limits(limits))
        data = strip(bytes(loaded.module.serialize()))
        trailer = seal(data, engine.fingerprint, "cwasm", key)
    _write(output, data + trailer)
    click.echo(f"{output}: {len(data) / 1024:.0f} KiB, {config.describe()}, "
               f"sha256 {loaded.sha256[:16]}…, sealed for this host", err=True)


def _write(output: Path, data: bytes) -> None:
    """Write atomically through a private temp file beside `output` (mode 0600)."""
    from ..regularfile import replace_file

    try:
        replace_file(output, data)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None

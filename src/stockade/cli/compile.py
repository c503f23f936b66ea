"""`stockade compile`: ahead-of-time compile a module to a `.cwasm` file."""

from __future__ import annotations

import os
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
def compile_(source: Path, output: Path | None, profile: str) -> None:
    """Compile SOURCE (.wasm or .wat) for this machine and wasmtime version.

    A .cwasm runs only with the same engine configuration: run it with the same
    --profile. It is native code: load only .cwasm files you made.
    """
    from ..engine import Engine, EngineConfig
    from ..policy import profile as get_profile

    config = EngineConfig.for_limits(get_profile(profile).limits)
    output = output or source.with_suffix(".cwasm")
    with Engine(config) as engine:
        loaded = engine.load(source)
        data = bytes(loaded.module.serialize())
    try:
        tmp = output.with_name(f".{output.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, output)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    click.echo(f"{output}: {len(data) / 1024:.0f} KiB, {config.describe()}, "
               f"sha256 {loaded.sha256[:16]}…", err=True)

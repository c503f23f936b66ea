"""`stockade run`: run one module under a policy; guest output passed through.

The click command, built from the option table in `runspec` (which the fast lane of
`stockade.cli.main` reads too); what it does is `execute.run_command`.
"""

from __future__ import annotations

from typing import Any

import click

from .execute import render, run_command, run_observed
from .paths import PathParam
from .runspec import RUN_OPTIONS

__all__ = ["run", "run_observed", "render"]


def _run(**params: Any) -> None:
    """Run MODULE (.wasm, .wat, .cwasm or oci://REF) in a sandbox. Options go before MODULE;
    everything after it goes to the guest (a `--` right after MODULE is dropped).
    A .cwasm is native code: it needs --allow-precompiled and this host's MAC.

    \b
    Examples:
      stockade run hello.wasm world
      stockade run --profile strict --timeout 2s --max-memory 16MiB app.wasm
      stockade run --dir ./data:/data --dir ./out:/out:rw --disk-quota 10MiB app.wasm
      stockade run --json python.wasm -c "print(6*7)"

    Exits with the guest's own code, or 124 (time/fuel), 125 (usage), 126 (cannot run or
    denied import), 127 (not found), 134 (trap), 137 (memory), 153 (quota).
    """
    run_command(**params)


def _param(option: Any) -> click.Option:
    kind: Any = None
    if option.choices:
        kind = click.Choice(list(option.choices))
    elif option.path:
        kind = PathParam("file" if not option.dir_okay else "any", option.what)
    extra: dict[str, Any] = {}
    if option.kind == "flag":
        extra["is_flag"] = True
    elif option.kind == "multiple":
        extra["multiple"] = True
    if kind is not None:
        extra["type"] = kind
    if option.metavar is not None:
        extra["metavar"] = option.metavar
    # Only what differs from click's defaults (an explicit is_flag=False changes how a
    # value that looks like an option is read).
    return click.Option([*option.flags, option.dest], help=option.help, **extra)


# Everything after MODULE is the guest's, as with wasmtime: options stop at the module.
run = click.Command(
    "run",
    callback=_run,
    params=[
        click.Argument(["module"]),
        click.Argument(["args"], nargs=-1, type=click.UNPROCESSED),
        *[_param(option) for option in RUN_OPTIONS],
    ],
    help=_run.__doc__,
    short_help="Run a WebAssembly module in a sandbox.",
    context_settings={"allow_interspersed_args": False},
)

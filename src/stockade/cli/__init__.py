"""The `stockade` command line: a thin shell that parses, calls the library, renders.

Subcommands live in their own modules and are imported only when invoked, so
`stockade run` pays for nothing it does not use (start-up time is a feature). A plainly
valid `stockade run` command line is parsed without click (`runspec.parse_run`, the same
option table click's command is built from); everything else goes through click.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .group import cli

__all__ = ["main", "cli"]


def __getattr__(name: str) -> Any:
    if name != "cli":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .group import cli

    return cli


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: usage errors exit 125 (not click's 2), never a traceback."""
    from ..errors import StockadeError

    words = sys.argv[1:] if argv is None else list(argv)
    for name in ("stdout", "stderr"):  # started with it closed: what it says goes nowhere
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    fast = None
    if words[:1] == ["run"]:
        from . import deferred
    try:
        if words[:1] == ["run"]:  # in the `try`: Ctrl-C during its imports is an interrupt
            deferred.pause_collection()
            deferred.defer_modules()  # before the command line's parser imports `pathlib`
            fast = _fast_run(words)
        if fast is not None:
            from .execute import run_command

            try:
                run_command(**fast)
            except SystemExit as done:
                _exit_now(done)
            return None
        return _click_main(words)
    except StockadeError as exc:
        from ..display import error_line
        from ..errors import UntrustedModule

        # A verdict `verify --json` printed, or a run's error object: not twice.
        if not isinstance(exc, UntrustedModule) and not exc.json_shown:
            _json_error(words, exc.message, exc.exit_code)
        sys.stderr.write(f"stockade: {error_line(exc.message)}\n")
        sys.exit(exc.exit_code)
    except OSError as exc:  # a path given that the system refuses (a name too long, ...)
        from ..display import error_line
        from ..policy.units import shown

        where = f"{shown(str(exc.filename), 60)}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}"
        _json_error(words, message, 125)
        sys.stderr.write(f"stockade: {error_line(message)}\n")
        sys.exit(125)
    except KeyboardInterrupt:
        _ignore_interrupts()  # stopping already: Ctrl-C again waits
        sys.stderr.write("stockade: interrupted\n")
        from ..cancel import INTERRUPTED_EXIT

        sys.exit(INTERRUPTED_EXIT)
    finally:
        if words[:1] == ["run"]:
            deferred.end_pause()


def _ignore_interrupts() -> None:
    """Ignore SIGINT from now on. Setting a handler first runs the Python handlers of
    signals already received: a Ctrl-C pending as it is set raises there, and is this
    same stop's (once more: the pending one was taken by the first try)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_now(done: SystemExit) -> None:
    """End a finished run without tearing the interpreter down (about a tenth of a
    `stockade run` goes to freeing modules at exit). Only when nothing registered an
    exit handler: telemetry, audit and breaker records were written and closed by the
    run itself; the standard streams are flushed here. Otherwise the interpreter exits,
    Ctrl-C ignored: it gives SIGINT its default action back as it finalizes, and a
    Ctrl-C pressed just after the run (`--dir`, `--isolate process`) ended the command
    by SIGINT, the run's exit code lost, nothing said."""
    import atexit

    if not isinstance(done.code, int | None) or atexit._ncallbacks():
        _ignore_interrupts()  # the run is over: Ctrl-C again waits for the exit
        raise done  # a message to print, or handlers to run: the interpreter's exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise done from None
    code = done.code or 0
    os._exit(code)


def _fast_run(words: list[str]) -> dict[str, Any] | None:
    """The `run` parameters when `words` is a plainly valid `run` command line."""
    from .runspec import parse_run

    return parse_run(words[1:])


def _click_main(words: list[str]) -> Any:
    import click

    from .group import cli

    try:
        return cli.main(args=words, prog_name="stockade", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("stockade: aborted", err=True)
        from ..cancel import INTERRUPTED_EXIT

        sys.exit(INTERRUPTED_EXIT)
    except click.ClickException as exc:
        _json_error(words, exc.format_message(), 125)
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            exc.show()  # a group given no command: its help
        else:
            from ..display import error_line

            sys.stderr.write(f"stockade: {error_line(_one_line(exc))}\n")
        sys.exit(125)


def _one_line(exc: Any) -> str:
    """Click's words for a refusal (a `click.ClickException`) as one line: the usage
    block it would print first says nothing the message and its hint do not."""
    message: str = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is None or ctx.command.get_help_option(ctx) is None:
        return message
    names = ctx.command.get_help_option_names(ctx)
    return f"{message} Try '{ctx.command_path} {max(names, key=len)}' for help."


def _json_error(words: list[str], message: str, exit_code: int) -> None:
    """Under `--json`, a refusal is also one JSON object on stdout (a run's has the
    result's shape: `execute.run_command`)."""
    if _asks_for_json(words):
        from ..display import shortened
        from .jsonline import report_json

        report_json({"error": shortened(message), "exit_code": exit_code})


def _asks_for_json(words: list[str]) -> bool:
    """Whether the (sub)command `words` name is given `--json`, as click parses it."""
    import click

    from .group import cli

    command: click.Command = cli
    rest = list(words)
    try:
        while isinstance(command, click.Group):
            found = command.get_command(click.Context(command), rest[0]) if rest else None
            if found is None:
                return False
            command, rest = found, rest[1:]
        ctx = command.make_context(command.name, rest, resilient_parsing=True)
    except Exception:  # noqa: BLE001 - reporting an error already: no second one
        return False
    return bool(ctx.params.get("as_json"))

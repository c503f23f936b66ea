"""The `stockade` command line: a thin shell that parses, calls the library, renders.

Subcommands live in their own modules and are imported only when invoked, so
`stockade run` pays for nothing it does not use (start-up time is a feature). A plainly
valid `stockade run` command line is parsed without click (`runspec.parse_run`, the same
option table click's command is built from); everything else goes through click.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    fast = None
    if words[:1] == ["run"]:
        from . import deferred
    try:
        if words[:1] == ["run"]:  # in the `try`: Ctrl-C during its imports is an interrupt
            deferred.pause_collection()
            fast = _fast_run(words)
        if fast is not None:
            deferred.defer_modules()
            from .execute import run_command

            try:
                run_command(**fast)
            except SystemExit as done:
                _exit_now(done)
            return None
        return _click_main(words)
    except StockadeError as exc:
        from ..display import printable

        sys.stderr.write(f"stockade: {printable(exc.message)}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _ignore_interrupts()  # stopping already: Ctrl-C again waits
        sys.stderr.write("stockade: interrupted\n")
        sys.exit(130)
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
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(125)

"""A function's command line, manifest key `argv` (WAGI's, as a TOML list).

    argv = ["python", "/app/handler.py"]

`argv[0]` names the program, the rest are the arguments every run of the function gets,
so an interpreter serves a script from a granted directory without any wrapper. WAGI
also expands `${SCRIPT_NAME}` and `${ARGS}` (query parameters as arguments); Stockade
passes neither: a request reaches a function only through its CGI variables and body.
The guest sees the module's file name as argv[0], as with `stockade run`.

The list is bounded (entries and bytes, the fast path's own ceiling included) and every
entry must be text without NUL bytes; errors name the key.
"""

from __future__ import annotations

from typing import Any

from ..errors import PolicyError

__all__ = ["parse_argv", "MAX_ARGS", "MAX_ARGV_BYTES"]

MAX_ARGS = 256  # entries, argv[0] included (the fast path takes at most 1,024 strings)
MAX_ARGV_BYTES = 64 * 1024  # UTF-8 bytes of all entries together


def parse_argv(value: Any, where: str) -> tuple[str, ...]:
    """The `argv` list as a tuple (empty when not given). Raises PolicyError naming
    `where` for anything that is not a non-empty list of at most `MAX_ARGS` strings,
    without NUL bytes, `MAX_ARGV_BYTES` long at most, argv[0] not empty."""
    if value is None:
        return ()
    hint = "expected a list like [\"python\", \"/app/handler.py\"] (argv[0] first)"
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}: {hint}")
    if len(value) > MAX_ARGS:
        raise PolicyError(f"{where}: {len(value)} entries, at most {MAX_ARGS}")
    size = 0
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise PolicyError(f"{where}[{index}]: expected a string, not {type(entry).__name__}")
        if "\0" in entry:
            raise PolicyError(f"{where}[{index}]: contains a NUL byte")
        try:
            size += len(entry.encode()) + 1
        except UnicodeEncodeError:
            raise PolicyError(f"{where}[{index}]: not valid text") from None
    if not value[0]:
        raise PolicyError(f"{where}[0]: the program name must not be empty")
    if size > MAX_ARGV_BYTES:
        raise PolicyError(f"{where}: {size} bytes, at most {MAX_ARGV_BYTES}")
    return tuple(value)

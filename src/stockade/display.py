"""Text from guests, made safe to show: the one escaping used by every human output.

Module file names, function names, guest messages, trap text and stderr are chosen by
whoever wrote the module or named its file. Printed raw they can move the cursor,
rewrite earlier lines, set the window title or hide text (ANSI escape sequences, C1
controls, bidirectional overrides) or break a one-line message into several.
`printable` replaces each such character with a visible escape (`\\x1b`, `\\u202e`);
bytes that were not valid UTF-8 (a file name decoded with `surrogateescape`) show as
`\\xNN`. `PrintableFormatter` applies it to log messages.
"""

from __future__ import annotations

import functools
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = ["printable", "error_line", "shortened", "PrintableFormatter", "ERROR_LINE"]

# Characters of an error line at most: errors quote what they refuse, and a hostile or
# mistaken argument (a 100 KB `--dir`) made a line of 200 KB.
ERROR_LINE = 1000


@functools.cache
def _unsafe() -> re.Pattern[str]:
    """C0 controls and DEL, C1 controls, line and paragraph separators, bidirectional
    marks, embeddings, overrides and isolates, and lone surrogates. Compiled on first
    use (~0.2 ms of a `stockade run` that prints none), then kept: the access log calls
    `printable` twice a request, and `re.sub`'s own cache lookup cost 0.2 µs a call."""
    return re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                      "\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control and invisible direction characters escaped (one line)."""
    return _unsafe().sub(_escape, text)


def shortened(text: str) -> str:
    """`text`, at most about `ERROR_LINE` characters: a longer one keeps its start (what
    was refused) and its end (why), the middle left out."""
    if len(text) <= ERROR_LINE:
        return text
    head, tail = ERROR_LINE * 3 // 4, ERROR_LINE // 4
    return f"{text[:head]}[... {len(text) - head - tail} characters ...]{text[-tail:]}"


def error_line(text: str) -> str:
    """`text` shortened, then printable: one line (escapes only lengthen it)."""
    return printable(shortened(text))


if TYPE_CHECKING:
    class PrintableFormatter(logging.Formatter):
        """A log formatter whose messages pass through `printable`."""


@functools.cache
def _formatter() -> type:
    import logging  # ~3 ms: only the commands that configure logging pay for it

    class PrintableFormatter(logging.Formatter):
        """A log formatter whose messages pass through `printable`: one record, one line
        (a traceback, written by the host, keeps its lines)."""

        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's)
            """The formatted line, its message escaped."""
            record.message = printable(record.message)
            return super().formatMessage(record)

    return PrintableFormatter


def __getattr__(name: str) -> Any:
    if name == "PrintableFormatter":
        return _formatter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

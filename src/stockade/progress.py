"""Progress on a terminal: an indicator for slow steps (compiles, downloads), on stderr only.

Nothing is drawn unless stderr is a terminal, so pipes, logs and `--json` consumers
see exactly what they saw before. A step that ends within `delay` draws nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["progress", "on_terminal"]

_FRAMES = "|/-\\"
_PERIOD = 0.25


def on_terminal(stream: TextIO | None = None) -> bool:
    """True when `stream` (default: stderr) is a terminal progress may be drawn on."""
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(label: str, delay: float = 1.0, stream: TextIO | None = None) -> Iterator[None]:
    """Show `label` with a spinner and elapsed seconds on stderr while the block runs,
    once it has run for `delay` seconds; the line is replaced by a summary when it ends.

    The work inside must release the GIL (wasmtime's compile does) for the indicator to
    move. Does nothing when stderr is not a terminal.
    """
    out = stream if stream is not None else sys.stderr
    if not on_terminal(out):
        yield
        return
    done = threading.Event()
    drawn = threading.Event()
    started = time.monotonic()

    def draw() -> None:
        if done.wait(delay):
            return
        frame = 0
        while not done.is_set():
            elapsed = time.monotonic() - started
            out.write(f"\r\x1b[2Kstockade: {label} {_FRAMES[frame % 4]} {elapsed:.0f}s")
            out.flush()
            drawn.set()
            frame += 1
            done.wait(_PERIOD)

    thread = threading.Thread(target=draw, name="stockade-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if drawn.is_set():
            out.write(f"\r\x1b[2Kstockade: {label}: done in "
                      f"{time.monotonic() - started:.1f}s\n")
            out.flush()

"""A failure's JSON object on stdout (`--json`), written without a failure of its own."""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["report_json"]


def report_json(data: dict[str, Any]) -> None:
    """Write `data` as one line on stdout. A closed, full or broken stdout loses it (the
    line on stderr still says what failed) instead of raising from an error handler, and
    stdout then points at /dev/null, so the interpreter's last flush does not fail too."""
    try:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.close(null)
        except OSError:
            pass

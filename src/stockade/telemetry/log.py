"""The telemetry package's loggers, created on first use.

Importing `logging` costs `stockade run` about 3 ms, and the run path logs only when
something goes wrong or the monitor warns; so modules call `logger()` where they log
instead of holding a module-level logger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

__all__ = ["logger"]

_configured = False


def logger(name: str = "stockade.telemetry") -> logging.Logger:
    """The logger `name`. The first call gives `stockade.telemetry` a NullHandler: a
    library logs, the application decides where the records go."""
    import logging

    global _configured
    if not _configured:
        logging.getLogger("stockade.telemetry").addHandler(logging.NullHandler())
        _configured = True
    return logging.getLogger(name)

"""The telemetry package's loggers, created on first use.

Importing `logging` costs `stockade run` about 3 ms, and the run path logs only when
something goes wrong or the monitor warns; so modules call `logger()` where they log
instead of holding a module-level logger.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

__all__ = ["logger", "records_lost", "rare_warning"]

_configured = False
LOST_INTERVAL = 60.0  # seconds between lines about records lost at one place
_lost: dict[str, tuple[float, int]] = {}  # key -> (last line, lines left unsaid since)


def logger(name: str = "stockade.telemetry") -> logging.Logger:
    """The logger `name`. The first call gives `stockade.telemetry` a NullHandler: a
    library logs, the application decides where the records go."""
    import logging

    global _configured
    if not _configured:
        logging.getLogger("stockade.telemetry").addHandler(logging.NullHandler())
        _configured = True
    return logging.getLogger(name)


def records_lost(place: str, exc: BaseException) -> None:
    """Records meant for `place` (the audit log, the telemetry file: a path) were lost to
    `exc` (a full disk lost the audit log's records without a word)."""
    cause = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
    rare_warning(place, f"telemetry: could not write {place}: {cause}", "records lost")


def rare_warning(key: str, text: str, note: str) -> bool:
    """Say `text (note)` at most once per `LOST_INTERVAL` per `key`, the note telling how
    many were left unsaid, on a logger outside ``stockade.telemetry``: with no logging
    configured the line reaches stderr, and a gateway failing on every request writes a
    line a minute. Returns whether it was said."""
    import logging
    import time

    from ..display import printable

    now = time.monotonic()
    last, since = _lost.get(key, (-LOST_INTERVAL, 0))
    if now - last < LOST_INTERVAL:
        _lost[key] = (last, since + 1)
        return False
    _lost[key] = (now, 0)
    more = f"; {since} more times since the last such line" if since else ""
    # Causes come from outside (paths, a collector's words): no control characters.
    logging.getLogger("stockade.records").warning("%s (%s%s)", printable(text), note, more)
    return True

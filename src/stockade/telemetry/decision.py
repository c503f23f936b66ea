"""A circuit breaker's answer before a run (`Decision`), apart from the breakers.

A leaf: `Telemetry.admit` answers every run with a `Decision`, and with breakers off
(the `stockade run` default) it must not import the SQLite breakers to do so.
"""

from __future__ import annotations

from ..records import FieldTuple

__all__ = ["Decision", "iso_time", "LATEST"]

# Beyond any time a breaker or quota keeps (seconds since the epoch: the year 2242), in
# this host's database and in the shared store alike.
LATEST = 2.0**33


def iso_time(timestamp: float) -> str:
    """Local ISO-8601 time with offset, to the second; a time no date can show (past the
    year 9999, infinite: read from a store someone changed) as seconds since the epoch,
    never an exception where it is shown."""
    from datetime import datetime

    try:
        return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return f"{timestamp:.6g} s since the epoch"


class Decision(FieldTuple):
    """Whether a run may go ahead. `until` (epoch seconds) is set while open; `probe` is
    True for the one run let through half-open."""

    allowed: bool
    state: str
    message: str = ""
    until: float | None = None
    probe: bool = False

    @property
    def until_iso(self) -> str | None:
        """`until` as local ISO-8601 time."""
        return None if self.until is None else iso_time(self.until)

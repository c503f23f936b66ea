"""Telemetry files of many invocation spans, written directly (the file sink would take
minutes for hundreds of thousands)."""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["durations_ns", "write_spans"]

SPANS_PER_LINE = 500
START = 1_800_000_000 * 10**9  # ns since the epoch


def durations_ns(count: int, seed: int = 7) -> list[int]:
    """Durations log-uniform from 1 µs to 100 s, one in 997 exactly zero."""
    rng = random.Random(seed)
    values = [int(10 ** rng.uniform(3, 11)) for _ in range(count)]
    for index in range(0, count, 997):
        values[index] = 0
    return values


def write_spans(path: Path, durations: list[int]) -> None:
    """Invocation spans of `durations` (ns) as the file sink writes them (the fields the
    reader needs), `SPANS_PER_LINE` to a line."""
    attributes = [{"key": "faas.invocation_id", "value": {"stringValue": "i"}},
                  {"key": "stockade.outcome", "value": {"stringValue": "exited"}}]
    with path.open("w") as file:
        for first in range(0, len(durations), SPANS_PER_LINE):
            spans = [{"name": "f", "startTimeUnixNano": str(START + i),
                      "endTimeUnixNano": str(START + i + duration), "attributes": attributes}
                     for i, duration in enumerate(durations[first:first + SPANS_PER_LINE],
                                                  start=first)]
            file.write(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
            file.write("\n")

"""The metric instruments every sink records, and their bounded attribute sets.

Metric attributes are bounded: the outcome (a fixed set) and the function name, of
which only the first `MAX_NAMES` distinct values are kept (later ones become
`_other`), so a flood of module names cannot blow up the number of series.
"""

from __future__ import annotations

import functools
import threading

from ..records import FieldTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Attributes",
    "Instrument",
    "INSTRUMENTS",
    "HISTOGRAMS",
    "COUNTERS",
    "VIOLATIONS",
    "AttributeSet",
    "Measurement",
    "attribute_set",
    "bounded_name",
    "MAX_NAMES",
]

Attributes = dict[str, str | int | float | bool]
MAX_NAMES = 64


class Instrument(FieldTuple):
    """A metric: OTel name, kind (`histogram` or `counter`), unit, description, and the
    histogram bucket boundaries."""

    name: str
    kind: str
    unit: str
    description: str
    bounds: tuple[float, ...] = ()


_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0, 60.0, 300.0)
_BYTES = tuple(float(4**n * 1024) for n in range(1, 12))  # 4 KiB .. 4 GiB

# Order matters: the file sink's aggregator keeps values in these positions.
HISTOGRAMS = (
    Instrument("faas.invoke_duration", "histogram", "s", "Invocation wall time", _SECONDS),
    Instrument("faas.cpu_usage", "histogram", "s", "CPU time per invocation", _SECONDS),
    Instrument("faas.mem_usage", "histogram", "By", "Peak linear memory", _BYTES),
)
COUNTERS = (
    Instrument("faas.invocations", "counter", "{invocation}", "Invocations by outcome"),
    Instrument("faas.coldstarts", "counter", "{coldstart}", "Invocations that compiled"),
    Instrument("stockade.fuel.consumed", "counter", "{instruction}", "Fuel consumed"),
    Instrument("stockade.files.created", "counter", "{file}", "Files the guests created"),
    Instrument("stockade.bytes.written", "counter", "By", "Bytes the guests wrote"),
    Instrument("stockade.monitor.warnings", "counter", "{warning}", "Monitor warnings"),
)
VIOLATIONS = Instrument("stockade.violations", "counter", "{violation}", "Limit or policy hits")
INSTRUMENTS: dict[str, Instrument] = {
    i.name: i for i in (*HISTOGRAMS, *COUNTERS, VIOLATIONS)
}


class AttributeSet(FieldTuple):
    """Metric attributes with their sorted key, built once per distinct set."""

    attrs: Attributes
    key: tuple[tuple[str, Any], ...]


@functools.lru_cache(maxsize=4096)
def attribute_set(*pairs: tuple[str, str]) -> AttributeSet:
    """The (cached) `AttributeSet` of `pairs`; callers keep values bounded."""
    return AttributeSet(dict(pairs), tuple(sorted(pairs)))


Measurement = tuple[str, float, AttributeSet]

_names: set[str] = set()
_names_lock = threading.Lock()


def bounded_name(name: str) -> str:
    """`name` while fewer than `MAX_NAMES` distinct names were seen, else `_other`."""
    if name in _names:
        return name
    with _names_lock:
        if len(_names) < MAX_NAMES:
            _names.add(name)
            return name
    return "_other"

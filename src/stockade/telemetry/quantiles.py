"""`Quantiles`: nearest-rank percentiles of durations in bounded memory.

Exact while at most `EXACT_LIMIT` values were added (kept as 8-byte doubles); past it,
every value is counted in a log-scale histogram of fixed size and a percentile is
within `RELATIVE_ERROR` of the exact one (DDSketch's buckets, Masson et al., VLDB 2019):
bucket `i` holds the values in (γ^(i-1), γ^i], γ = (1+α)/(1-α), and answers
2γ^i/(γ+1), which is within α of every value in it. The buckets span `LOWEST` to
`HIGHEST` (one nanosecond to the longest span a uint64 of nanoseconds holds, in ms):
about 2,200 counters, 18 KB, however many values come (a value outside that range, which
no span has, counts in the end bucket). Zero is counted apart, as are the least and the
greatest value: those percentiles are exact.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

__all__ = ["Quantiles", "percentile", "EXACT_LIMIT", "RELATIVE_ERROR", "LOWEST", "HIGHEST"]

EXACT_LIMIT = 10_000  # values kept exactly: 80 KB, and ~0.3 MB for a moment to sort them
RELATIVE_ERROR = 0.01
LOWEST = 1e-6  # ms: one nanosecond, the finest a span's times tell apart
HIGHEST = 2**64 / 1e6  # ms: the longest span of uint64 nanosecond times

_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_FIRST = math.ceil(math.log(LOWEST) / _LOG_GAMMA)
_BUCKETS = math.ceil(math.log(HIGHEST) / _LOG_GAMMA) - _FIRST + 1


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[_rank(fraction, len(ordered)) - 1]


def _rank(fraction: float, count: int) -> int:
    return min(count, max(1, math.ceil(fraction * count)))


class Quantiles:
    """Percentiles of the non-negative values `add`ed: exact up to `exact_limit` values,
    then within `RELATIVE_ERROR` of exact (`relative_error` says which applies)."""

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        self._limit = exact_limit
        self._exact = True
        self._values: array[float] = array("d")
        self._counts: array[int] = array("Q")
        self._zeros = 0
        self._count = 0
        self._low = math.inf
        self._high = -math.inf
        if exact_limit <= 0:
            self._to_histogram()

    def __len__(self) -> int:
        return self._count

    @property
    def exact(self) -> bool:
        """True while the percentiles are exact."""
        return self._exact

    @property
    def relative_error(self) -> float:
        """The most a percentile may differ from the exact one, relative to it: 0.0 while
        exact, else `RELATIVE_ERROR`."""
        return 0.0 if self.exact else RELATIVE_ERROR

    def add(self, value: float) -> None:
        """Count `value` (a duration: finite, not negative). Raises ValueError."""
        if not 0.0 <= value < math.inf:  # NaN fails too
            raise ValueError(f"not a duration: {value!r}")
        self._count += 1
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        if self._exact:
            self._values.append(value)
            if len(self._values) > self._limit:
                self._to_histogram()
        else:
            self._count_value(value)

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile at `fraction` (0.5: the median), or None without
        values."""
        if not self._count:
            return None
        if self._exact:
            return percentile(self._values, fraction)
        rank = _rank(fraction, self._count)
        if rank <= self._zeros:
            return 0.0
        if rank in (1, self._count):  # the least and the greatest are known exactly
            return self._low if rank == 1 else self._high
        seen = self._zeros
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                estimate = 2 * _GAMMA ** (index + _FIRST) / (_GAMMA + 1)
                # The exact value lies between the least and the greatest seen.
                return min(max(estimate, self._low), self._high)
        return self._high  # not reached: the counts add up to `_count`

    def _to_histogram(self) -> None:
        values, self._values, self._exact = self._values, array("d"), False
        self._counts = array("Q", bytes(8 * _BUCKETS))
        for value in values:
            self._count_value(value)

    def _count_value(self, value: float) -> None:
        if value == 0.0:
            self._zeros += 1
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA) - _FIRST
        self._counts[min(max(index, 0), _BUCKETS - 1)] += 1

"""Sample statistics for the benchmark: percentiles, noise, outliers, geometric means.

Percentiles use linear interpolation between closest ranks (numpy's default), so small
samples give stable, comparable figures. Outliers are counted, never dropped: a shared
machine's hiccups belong in p99 and max, and the count says how noisy a row was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from ..errors import StockadeError

__all__ = ["BenchError", "Summary", "percentile", "geomean", "outlier_count", "ratio"]

# Tukey's "far out" fence: beyond Q3 + 3 IQR (or below Q1 - 3 IQR).
OUTLIER_FENCE = 3.0


class BenchError(StockadeError):
    """A benchmark could not be planned, run or reported (bad option, empty data, ...)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, linearly interpolated.

    Raises BenchError for an empty sequence or `q` outside 0..100.
    """
    if not values:
        raise BenchError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise BenchError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def outlier_count(values: Sequence[float], fence: float = OUTLIER_FENCE) -> int:
    """How many values lie beyond Tukey's fences (`fence` times the interquartile range)."""
    if len(values) < 4:
        return 0
    q1, q3 = percentile(values, 25), percentile(values, 75)
    spread = (q3 - q1) * fence
    return sum(1 for v in values if v < q1 - spread or v > q3 + spread)


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive values. Raises BenchError when empty or not positive."""
    items = list(values)
    if not items:
        raise BenchError("geometric mean of no values")
    if any(v <= 0 for v in items):
        raise BenchError("geometric mean needs positive values")
    return math.exp(sum(math.log(v) for v in items) / len(items))


def ratio(value: float | None, baseline: float | None) -> float | None:
    """`value / baseline`, or None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


@dataclass(frozen=True)
class Summary:
    """Distribution of one metric over the measured (post-warm-up) samples."""

    n: int
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float
    stdev: float
    outliers: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise `values`. Raises BenchError when there are none."""
        if not values:
            raise BenchError("no samples to summarise")
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
        return cls(
            n=len(values),
            min=min(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values),
            mean=mean,
            stdev=math.sqrt(variance),
            outliers=outlier_count(values),
        )

    @property
    def spread(self) -> float:
        """(max - min) / median: a quick noise figure (0.1 means a 10 % spread)."""
        return (self.max - self.min) / self.p50 if self.p50 > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        """Plain data for results.json."""
        return {k: float(v) for k, v in asdict(self).items()}

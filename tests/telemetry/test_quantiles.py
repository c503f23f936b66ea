"""`Quantiles`: nearest-rank percentiles exact up to `exact_limit` values, then within
`RELATIVE_ERROR` of exact, over the whole range of span durations."""

from __future__ import annotations

import math

import pytest

from stockade.telemetry.quantiles import RELATIVE_ERROR, Quantiles, percentile

from .spanfiles import durations_ns


def close(found: float | None, exact: float | None, error: float) -> bool:
    """Whether `found` is within `error` of `exact`, relatively."""
    assert found is not None and exact is not None
    return abs(found - exact) <= error * exact * (1 + 1e-9)


def test_exact_up_to_the_limit() -> None:
    quantiles = Quantiles(exact_limit=100)
    values = [float(v) for v in range(100, 0, -1)]
    for value in values:
        quantiles.add(value)
    assert quantiles.exact and quantiles.relative_error == 0.0 and len(quantiles) == 100
    for fraction in (0.0, 0.01, 0.5, 0.99, 1.0):
        assert quantiles.percentile(fraction) == percentile(values, fraction)
    assert Quantiles().percentile(0.5) is None


def test_past_the_limit_within_the_stated_error() -> None:
    values = [d / 1e6 for d in durations_ns(50_000)]
    quantiles = Quantiles(exact_limit=1000)
    for value in values:
        quantiles.add(value)
    assert not quantiles.exact and quantiles.relative_error == RELATIVE_ERROR
    for fraction in (0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert close(quantiles.percentile(fraction), percentile(values, fraction),
                     RELATIVE_ERROR), fraction
    assert quantiles.percentile(0.0) == 0.0 and quantiles.percentile(1.0) == max(values)


def test_the_whole_range_of_span_durations() -> None:
    # From one nanosecond to the longest span uint64 nanoseconds hold, in ms.
    extremes = [1e-6, 2e-6, 0.5, 1.0, 1.0001, 3.3e4, 1.8446744073709552e13]
    quantiles = Quantiles(exact_limit=0)
    for value in extremes:
        quantiles.add(value)
    for rank, value in enumerate(extremes, start=1):
        assert close(quantiles.percentile((rank - 0.5) / len(extremes)), value,
                     RELATIVE_ERROR), value


def test_values_that_are_no_duration_are_refused() -> None:
    quantiles = Quantiles()
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="not a duration"):
            quantiles.add(bad)
    assert len(quantiles) == 0

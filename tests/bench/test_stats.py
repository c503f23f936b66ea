"""Statistics of the benchmark harness: percentiles, summaries, outliers, ratios."""

from __future__ import annotations

import math

import pytest

from stockade.bench.stats import BenchError, Summary, geomean, outlier_count, percentile, ratio


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(BenchError):
        percentile([], 50)
    with pytest.raises(BenchError):
        percentile([1.0], 101)


def test_summary_reports_noise_and_counts_outliers_without_dropping_them() -> None:
    values = [10.0] * 20 + [11.0] * 20 + [500.0]
    summary = Summary.of(values)
    assert summary.n == 41
    assert summary.min == 10.0 and summary.max == 500.0
    assert summary.p50 == 11.0
    assert summary.outliers == 1
    assert summary.p99 > summary.p95 >= summary.p50
    assert summary.spread == pytest.approx((500.0 - 10.0) / 11.0)
    assert set(summary.to_dict()) >= {"min", "p50", "p95", "p99", "max", "outliers"}


def test_summary_of_one_sample_has_zero_deviation() -> None:
    summary = Summary.of([3.0])
    assert summary.stdev == 0.0 and summary.p99 == 3.0 and summary.outliers == 0


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(BenchError):
        Summary.of([])


def test_outliers_need_enough_samples() -> None:
    assert outlier_count([1.0, 1.0, 100.0]) == 0


def test_geomean_and_ratio() -> None:
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert geomean([2.0, 2.0, 2.0]) == pytest.approx(2.0)
    assert math.isclose(geomean([0.5, 2.0]), 1.0)
    with pytest.raises(BenchError):
        geomean([])
    with pytest.raises(BenchError):
        geomean([1.0, 0.0])
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None

"""`stockade telemetry show` on a file of any length: memory does not grow with the
number of spans, the percentiles stay within the error it states, and it says when they
are not exact."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from stockade.telemetry import reader
from stockade.telemetry.reader import percentile, read_summary
from tests.conftest import stockade

from .spanfiles import durations_ns, write_spans

STATED_ERROR = 0.01  # what `show` says past its exact limit


def _close(found: float | None, exact: float | None) -> bool:
    assert found is not None and exact is not None
    return abs(found - exact) <= STATED_ERROR * exact * (1 + 1e-9)


def _read_traced(path: Path) -> tuple[int, reader.Summary]:
    """The peak of memory allocated while `path` is summarised, and the summary."""
    tracemalloc.start()
    try:
        summary = read_summary(path)
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_stays_bounded_on_a_huge_file(tmp_path: Path) -> None:
    # One float a span was kept to the end: 300,000 spans held ~10 MB more than 30,000.
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_spans(small, durations_ns(30_000))
    durations = durations_ns(300_000)
    write_spans(large, durations)
    exact = [d / 1e6 for d in durations]
    small_peak, _ = _read_traced(small)
    large_peak, summary = _read_traced(large)
    assert summary.spans == 300_000 and summary.bad_lines == 0
    assert large_peak - small_peak < 1024**2, (small_peak, large_peak)
    assert _close(summary.p50_ms, percentile(exact, 0.5))
    assert _close(summary.p99_ms, percentile(exact, 0.99))


def test_show_says_when_percentiles_are_approximate(tmp_path: Path) -> None:
    assert reader.RELATIVE_ERROR == STATED_ERROR
    few, many = tmp_path / "few.jsonl", tmp_path / "many.jsonl"
    write_spans(few, durations_ns(50))
    write_spans(many, durations_ns(reader.EXACT_LIMIT + 1))
    exact = json.loads(stockade("telemetry", "show", "--json", "--file", str(few)).stdout)
    assert exact["percentile_error"] == 0.0 and exact["spans"] == 50
    assert exact["p50_ms"] == percentile([d / 1e6 for d in durations_ns(50)], 0.5)
    approximate = json.loads(stockade("telemetry", "show", "--json", "--file",
                                      str(many)).stdout)
    assert approximate["percentile_error"] == STATED_ERROR
    text = " ".join(stockade("telemetry", "show", "--file", str(many)).stdout.decode().split())
    assert f"each within 1%: over {reader.EXACT_LIMIT} spans" in text
    assert "within" not in stockade("telemetry", "show", "--file", str(few)).stdout.decode()

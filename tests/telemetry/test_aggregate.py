"""Delta aggregation: folding in bulk gives exactly what adding one by one would."""

from __future__ import annotations

import bisect
from types import SimpleNamespace
from typing import Any

from stockade.telemetry.aggregate import FOLD, DeltaAggregator
from stockade.telemetry.instruments import COUNTERS, HISTOGRAMS


def record(index: int, outcome: str) -> Any:
    """The fields of an InvocationRecord the aggregator reads."""
    return SimpleNamespace(
        metric_name="hello", outcome=outcome, wall_s=index / 1000, cpu_ms=index / 2,
        peak_memory=65536 * (1 + index % 3), coldstart=index == 0, fuel_consumed=100 + index,
        files_created=index % 2, bytes_written=10 * index, warnings=int(index % 50 == 0),
        violation=outcome != "exited")


def metric(metrics: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(m for m in metrics if m["name"] == name)


def test_bulk_folding_matches_the_figures() -> None:
    aggregator = DeltaAggregator()
    count = FOLD * 2 + 17  # two folds on the way and a remainder at drain
    for index in range(count):
        aggregator.add(record(index, "exited"))
    aggregator.add(record(7, "timeout"))
    metrics = aggregator.drain()
    walls = [i / 1000 for i in range(count)]
    duration = metric(metrics, HISTOGRAMS[0].name)["histogram"]["dataPoints"]
    exited = next(p for p in duration if {"key": "stockade.outcome",
                                          "value": {"stringValue": "exited"}} in p["attributes"])
    assert exited["count"] == str(count)
    assert abs(exited["sum"] - sum(walls)) < 1e-9
    assert (exited["min"], exited["max"]) == (min(walls), max(walls))
    buckets = [0] * (len(HISTOGRAMS[0].bounds) + 1)
    for value in walls:
        buckets[bisect.bisect_left(HISTOGRAMS[0].bounds, value)] += 1
    assert exited["bucketCounts"] == [str(b) for b in buckets]
    fuel = metric(metrics, COUNTERS[2].name)["sum"]["dataPoints"]
    assert sum(int(p["asInt"]) for p in fuel) == sum(100 + i for i in range(count)) + 107
    violations = metric(metrics, "stockade.violations")["sum"]["dataPoints"]
    assert [p["asInt"] for p in violations] == ["1"]
    assert aggregator.drain() == [] and len(aggregator) == 0

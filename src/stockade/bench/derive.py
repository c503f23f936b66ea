"""Figures derived from results, shared by the report and the charts: start-up, latency,
compute ratios to native, I/O overhead, microbenchmark rates."""

from __future__ import annotations

from .results import BenchResults, Measurement
from .stats import BenchError, geomean, ratio

__all__ = ["BASELINE", "cold_start_ms", "cold_start_measured", "compute_ratios",
           "compute_geomean", "io_ratios", "micro_figure", "workload_keys", "hello"]

BASELINE = "native"
HELLO = "startup/hello"


def workload_keys(results: BenchResults, group: str) -> list[str]:
    """Keys of the workloads of one group, in run order."""
    return [w["key"] for w in results.workloads if w["group"] == group]


def hello(results: BenchResults, backend: str) -> Measurement | None:
    """The hello measurement of a backend."""
    return results.get(backend, HELLO)


def cold_start_ms(measurement: Measurement | None) -> float | None:
    """Median request-to-first-output; request-to-exit when the program prints nothing."""
    if measurement is None:
        return None
    return measurement.p50("first_ms") or measurement.p50("wall_ms")


def cold_start_measured(kind: str, measurement: Measurement | None) -> bool:
    """Whether a backend's hello shows a cold start: a new process per request (`kind`
    "process") whose first output was timed. The isolated worker's kind is "process" (its
    worker is one) but it is warm and times no first output: `cold_start_ms` would fall
    back to its request time and show it as a cold start faster than a native process."""
    return kind == "process" and measurement is not None and \
        measurement.p50("first_ms") is not None


def compute_ratios(results: BenchResults, backend: str) -> dict[str, float]:
    """Hot-loop time of `backend` over native's, per compute workload both ran."""
    found: dict[str, float] = {}
    for key in workload_keys(results, "compute"):
        base = results.get(BASELINE, key)
        mine = results.get(backend, key)
        value = ratio(mine.p50("hot_ms") if mine else None, base.p50("hot_ms") if base else None)
        if value is not None:
            found[key] = value
    return found


def compute_geomean(results: BenchResults, backend: str) -> float | None:
    """Geometric mean of `compute_ratios`, or None."""
    values = list(compute_ratios(results, backend).values())
    try:
        return geomean(values)
    except BenchError:
        return None


def io_ratios(results: BenchResults, backend: str) -> dict[int, float]:
    """Request-to-completion time over native's, by echo payload size in bytes."""
    found: dict[int, float] = {}
    for key in workload_keys(results, "io"):
        base, mine = results.get(BASELINE, key), results.get(backend, key)
        value = ratio(mine.p50() if mine else None, base.p50() if base else None)
        if value is not None:
            found[int(key.rsplit("/", 1)[1])] = value
    return found


def micro_figure(results: BenchResults, backend: str, kind: str) -> float | None:
    """The microbenchmark's own unit: cpu -> ms, clock/syscall -> ns per call,
    memcpy -> GB/s (decimal)."""
    found = results.get(backend, f"micro/{kind}")
    workload = results.workload(f"micro/{kind}")
    hot = found.p50("hot_ms") if found else None
    if hot is None or workload is None or hot <= 0:
        return None
    if kind == "cpu":
        return hot
    if kind in ("clock", "syscall"):
        return hot * 1e6 / int(workload["size"])
    if kind == "memcpy":
        mib, reps = int(workload["args"][1]), int(workload["args"][2])
        return (mib << 20) * reps / (hot * 1e6)
    return None

"""Prometheus metrics of the gateway, summed over its worker processes.

Each worker counts into its own `Metrics` (event loop thread only, no locks) and writes
a snapshot file to a directory the workers share, every second and before answering
`/metrics`; the worker that answers renders the sum of all snapshots in the Prometheus
text format (0.0.4). Gauges count only from workers still alive.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..regularfile import replace_file

__all__ = ["Cell", "Metrics", "MetricsStore", "render", "FAMILIES", "BUCKETS", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)
Labels = tuple[tuple[str, str], ...]

# name -> (type, help)
FAMILIES: dict[str, tuple[str, str]] = {
    "stockade_gateway_requests_total": ("counter", "HTTP requests answered, by status code"),
    "stockade_gateway_request_duration_seconds": (
        "histogram", "Time from request to response, by function"),
    "stockade_gateway_rejections_total": (
        "counter", "Requests refused before running (quota, queue, body, breaker)"),
    "stockade_gateway_invocations_total": ("counter", "Function invocations, by outcome"),
    "stockade_gateway_coldstarts_total": ("counter", "First invocations of a function"),
    "stockade_gateway_guest_cpu_seconds_total": ("counter", "Guest CPU time, by tenant"),
    "stockade_gateway_quota_cpu_seconds_total": (
        "counter", "Guest CPU time charged to quotas (abandoned inline attempts included)"),
    "stockade_gateway_inflight": (
        "gauge", "Invocations queued for or running on a guest thread (a run finished "
        "inline is over before anyone could see it)"),
    "stockade_gateway_offloaded_total": (
        "counter", "Runs not finished inline that went to a guest thread (an attempt that "
        "outgrew the inline budget, or one skipped while it backs off)"),
    "stockade_gateway_state_fallbacks_total": (
        "counter", "Requests admitted by this replica's own limits (shared state unavailable)"),
    "stockade_gateway_state_unavailable_total": (
        "counter", "Requests the shared state could not decide, by on_unavailable policy"),
    "stockade_gateway_reloads_total": ("counter", "Manifest reloads, by result"),
    "stockade_gateway_connections_refused_total": (
        "counter", "Connections refused when accepted: their address held "
        "max_connections_per_ip"),
    "stockade_gateway_connection_table_full_total": (
        "counter", "Connections refused when accepted: a new address, and the connection "
        "table full (max_connection_addresses)"),
}


class Cell:
    """One counter series' value. A caller that keeps it (see `Metrics.counter`) adds to
    `value` directly: no (name, labels) key built and hashed per update."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Metrics:
    """One worker's counters, gauges and histograms, keyed by (name, labels).

    A series is never dropped once made: the `Cell` or histogram list a caller keeps
    (`counter`, `histogram`) stays the one reported, whatever the caller's cache does."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], Cell] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], list[float]] = {}

    def counter(self, name: str, labels: Labels) -> Cell:
        """The cell of a counter series, made (and reported, at 0) on first use: for
        a caller that counts into it on every request."""
        key = (name, labels)
        cell = self.counters.get(key)
        if cell is None:
            cell = self.counters[key] = Cell()
        return cell

    def histogram(self, name: str, labels: Labels) -> list[float]:
        """The data of a histogram series, made on first use: a count per bucket of
        `BUCKETS` then +Inf's, the sum, the count (see `observe`, whose updates a caller
        that keeps it repeats)."""
        key = (name, labels)
        data = self.histograms.get(key)
        if data is None:
            data = self.histograms[key] = [0.0] * (len(BUCKETS) + 3)
        return data

    def inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        """Add `value` to a counter."""
        self.counter(name, labels).value += value

    def add(self, name: str, labels: Labels, delta: float) -> None:
        """Move a gauge by `delta`."""
        key = (name, labels)
        self.gauges[key] = self.gauges.get(key, 0.0) + delta

    def observe(self, name: str, labels: Labels, value: float) -> None:
        """Record `value` (seconds) in a histogram."""
        data = self.histogram(name, labels)
        data[bisect.bisect_left(BUCKETS, value)] += 1  # the +Inf slot sits after the last
        data[-2] += value
        data[-1] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every series."""
        return {
            "pid": os.getpid(),
            "counters": [[n, list(map(list, labels)), c.value] for (n, labels), c
                         in self.counters.items()],
            "gauges": [[n, list(map(list, labels)), v] for (n, labels), v
                       in self.gauges.items()],
            "histograms": [[n, list(map(list, labels)), d] for (n, labels), d
                           in self.histograms.items()],
        }


class MetricsStore:
    """Snapshot files of all workers in `directory` (one `worker-<index>.json` each)."""

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.path = directory / f"worker-{index}.json"

    def write(self, metrics: Metrics) -> None:
        """Replace this worker's snapshot atomically (errors are ignored: metrics never
        break serving)."""
        try:
            replace_file(self.path, json.dumps(metrics.snapshot()).encode())
        except OSError:
            pass

    def read_all(self) -> list[dict[str, Any]]:
        """Every worker's latest snapshot."""
        snapshots = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                snapshots.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return snapshots


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(snapshots: Iterable[dict[str, Any]], replica: str | None = None) -> str:
    """The Prometheus text exposition of the sum of `snapshots`, and with `replica`, the
    `stockade_gateway_replica_info` series naming it (once, whatever the workers: a sum
    over replicas counts replicas). Every other series counts this replica's own
    requests, so sums over replicas are the cluster's."""
    counters: dict[tuple[str, Labels], float] = {}
    gauges: dict[tuple[str, Labels], float] = {}
    histograms: dict[tuple[str, Labels], list[float]] = {}
    for snap in snapshots:
        alive = _alive(int(snap.get("pid", 0)))
        for kind, target in (("counters", counters), ("gauges", gauges)):
            if kind == "gauges" and not alive:
                continue
            for name, labels, value in snap.get(kind, []):
                key = (name, tuple(map(tuple, labels)))
                target[key] = target.get(key, 0.0) + value
        for name, labels, data in snap.get("histograms", []):
            key = (name, tuple(map(tuple, labels)))
            total = histograms.setdefault(key, [0.0] * len(data))
            for i, value in enumerate(data):
                total[i] += value
    lines: list[str] = []
    if replica is not None:
        lines += ["# HELP stockade_gateway_replica_info This replica (service.instance.id)",
                  "# TYPE stockade_gateway_replica_info gauge",
                  f"stockade_gateway_replica_info{_labels([('service_instance_id', replica)])} 1"]
    for family, (kind, text) in FAMILIES.items():
        lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
        if kind == "histogram":
            for (name, labels), data in sorted(histograms.items()):
                if name == family:
                    lines += _histogram_lines(name, labels, data)
            continue
        for (name, labels), value in sorted((gauges if kind == "gauge" else counters).items()):
            if name == family:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: Labels, data: list[float]) -> list[str]:
    lines, running = [], 0.0
    for bound, count in zip((*BUCKETS, float("inf")), data, strict=False):
        running += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {_number(running)}")
    lines.append(f"{name}_sum{_labels(labels)} {data[-2]!r}")
    lines.append(f"{name}_count{_labels(labels)} {_number(data[-1])}")
    return lines


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)

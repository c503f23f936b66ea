"""Plans: workloads, sample counts, which backends take which sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.bench.backends import BACKEND_NAMES, Context, catalogue
from stockade.bench.plan import PLANS, get_plan
from stockade.bench.runner import participants
from stockade.bench.stats import BenchError


def _context(tmp_path: Path) -> Context:
    return Context(workdir=tmp_path, cache_dir=tmp_path / "cache", stockade="stockade",
                   node="node", node_script=tmp_path / "host.mjs", system_python="python3")


def test_unknown_plan_is_an_error() -> None:
    with pytest.raises(BenchError, match="unknown plan"):
        get_plan("huge")


def test_full_plan_covers_every_group_and_size() -> None:
    keys = [w.key for w in PLANS["full"].workloads()]
    assert "startup/hello" in keys and "real/python" in keys
    assert {f"compute/{k}/{v}" for k in ("fnv", "sha256", "sieve", "qsort")
            for v in ("small", "medium", "large")} <= set(keys)
    assert f"io/echo/{16 << 20}" in keys and "io/echo/1024" in keys
    assert {"micro/cpu", "micro/clock", "micro/syscall", "micro/memcpy"} <= set(keys)


def test_batches_spread_samples_over_rounds() -> None:
    plan = PLANS["full"]
    assert plan.batch("startup", "fast") * plan.rounds >= plan.samples("startup", "fast")
    assert plan.batch("compute", "compile") == 0
    assert plan.batch("real", "compile") >= 1


def test_interpreter_runs_only_its_sizes(tmp_path: Path) -> None:
    plan = PLANS["full"]
    backends = catalogue(_context(tmp_path))
    assert [b.name for b in backends] == list(BACKEND_NAMES)
    large = next(w for w in plan.workloads() if w.key == "compute/fnv/large")
    names = [b.name for b in participants(large, backends, plan)]
    assert "native" in names and "stockade" in names and "pulley" not in names
    hello = next(w for w in plan.workloads() if w.key == "startup/hello")
    assert len(participants(hello, backends, plan)) == len(backends)


def test_interpreter_sizes_are_measured_natively_too() -> None:
    for plan in PLANS.values():
        assert set(plan.interpreter_variants) <= set(plan.variants)

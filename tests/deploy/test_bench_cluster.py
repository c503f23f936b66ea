"""`benchmarks/bench_cluster.py` runs end to end: a short round of local and Redis state
through the load balancer, with its figures written (the benchmark itself is run by hand;
this keeps it working as the code it drives changes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .cluster import needs_shared_state, needs_tools

ROOT = Path(__file__).resolve().parents[2]


@needs_shared_state
def test_bench_cluster_measures_local_and_redis_state(tmp_path: Path) -> None:
    needs_tools()
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cluster.py"), "--replicas", "2",
         "--duration", "1", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "over all rounds" in done.stdout
    results = json.loads(out.read_text())
    assert {row["state"] for row in results["rows"]} == {"local", "redis"}
    assert all(row["requests"] > 0 and row["cpu_us_per_request"] > 0
               for row in results["rows"])
    assert results["overall"] > 0

"""What shared state costs: hello through HAProxy in front of a simulated cluster, with
each replica's own (local) state and with the state in Redis, in one run.

    .venv/bin/python benchmarks/bench_cluster.py [--replicas 3] [--duration 10]
        [--connections 32] [--json out.json]

Each row: `deploy/simulate/cluster.py` brings up the replicas (one worker each, in their
own network namespaces), Redis for the `redis` row, and HAProxy; wrk warms up for 2 s,
then measures `--duration` seconds. The function's tenant has a rate and a concurrency
quota high enough never to refuse, so every request takes the quota path (with Redis:
its round trip) without being refused. Reports requests/s, p50, p99, errors per row and
the throughput ratio redis/local (the goal: shared state costs under 15 %). Needs
`make guests`, wrk, haproxy and redis-server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_gateway import wrk  # this folder is on the path of a script run from it

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "build" / "guests" / "functions"

MANIFEST = """\
[server]
threads = 8
access_log = "off"
telemetry = "off"

[tenant.web]
rate = 100000
concurrency = 1000

[[function]]
name = "hello"
route = "/hello"
module = "{functions}/hello.wasm"
tenant = "web"
isolate = "none"
"""


def load_cluster() -> Any:
    """deploy/simulate/cluster.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "stockade_cluster_script", ROOT / "deploy" / "simulate" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(script: Any, work: Path, state: str, replicas: int, duration: float,
            connections: int) -> dict[str, Any]:
    """One row: a cluster with `state`, wrk through its HAProxy."""
    run_dir = work / state
    run_dir.mkdir()
    manifest = run_dir / "manifest.toml"
    manifest.write_text(MANIFEST.format(functions=FUNCTIONS))
    cluster = script.Cluster(run_dir, replicas, state, str(manifest),
                             redis_password="bench" if state == "redis" else "")
    try:
        cluster.up()
        url = f"{cluster.url}/hello"
        wrk(url, 2.0, connections)  # warm-up: connections, caches, JIT-free but cold pages
        row = wrk(url, duration, connections)
    finally:
        cluster.down()
    row.update(state=state, replicas=replicas, mode=cluster.mode)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if not (FUNCTIONS / "hello.wasm").exists():
        raise SystemExit("bench_cluster: run `make guests` first")
    script = load_cluster()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stockade-bench-cluster-") as work:
        for state in ("local", "redis"):
            try:
                rows.append(measure(script, Path(work), state, args.replicas,
                                    args.duration, args.connections))
            except script.ClusterError as exc:
                print(f"bench_cluster: {state}: {exc}", file=sys.stderr)
                rows.append({"state": state, "error": str(exc)})
    print(f"{'state':<6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in rows:
        if "error" in row:
            print(f"{row['state']:<6} failed: {row['error']}")
            continue
        errors = row["non_2xx"] + row["socket_errors"]
        print(f"{row['state']:<6} {row['requests_per_s']:>9.0f} {row['p50_ms']:>8.2f} "
              f"{row['p99_ms']:>8.2f} {errors:>7}")
    result: dict[str, Any] = {"rows": rows}
    if all("error" not in row for row in rows):
        local, redis = rows
        ratio = redis["requests_per_s"] / local["requests_per_s"]
        result["redis_over_local"] = ratio
        print(f"redis/local throughput: {ratio:.3f} (shared state costs {1 - ratio:.1%}; "
              f"goal < 15 %)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

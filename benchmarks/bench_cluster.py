"""What shared state costs: hello through HAProxy in front of a simulated cluster, with
each replica's own (local) state and with the state in Redis, in one run.

    .venv/bin/python benchmarks/bench_cluster.py [--replicas 3] [--duration 10]
        [--rounds 2] [--connections 32] [--workers 1] [--single] [--json out.json]

`deploy/simulate/cluster.py` brings up two clusters side by side (replicas with one
worker each, in their own network namespaces, and HAProxy): one with local state, one
with its state in Redis. wrk warms each up for 2 s, then measures `--duration` seconds
through each HAProxy in turn, `--rounds` times (alternating, so both see the same
machine; the idle cluster costs next to nothing). The function's tenant has a rate and a concurrency
quota high enough never to refuse, so every request takes the quota path (with Redis:
its round trip) without being refused. Reports requests/s, p50, p99, errors per row,
the throughput ratio redis/local per round and over all rounds, and the median p99 of
each (the goal: shared state costs under 15 %). On a shared machine throughput follows
whatever else runs; the CPU time the cluster's own processes (replicas, HAProxy, Redis)
spent per request is steadier, so it is reported too (`cpu us/req`, from /proc), with
the Redis scripts run per request. `--single` measures one replica
directly, without HAProxy (the cost of the state on one server; `--workers` sets its
worker processes). Needs `make guests`, wrk, haproxy and redis-server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
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


def start(script: Any, work: Path, state: str, replicas: int, workers: int) -> Any:
    """A cluster with `state` serving MANIFEST, up."""
    run_dir = work / state
    run_dir.mkdir()
    manifest = run_dir / "manifest.toml"
    manifest.write_text(MANIFEST.format(functions=FUNCTIONS))
    cluster = script.Cluster(run_dir, replicas, state, str(manifest), workers=workers,
                             redis_password="bench" if state == "redis" else "")
    try:
        cluster.up()
    except script.ClusterError as exc:
        logs = "".join(p.read_text()[-1500:] for p in sorted((run_dir / "logs").glob("*")))
        raise SystemExit(f"bench_cluster: {state}: {exc}\n{logs}") from None
    return cluster


def cpu_seconds(sessions: set[int]) -> dict[int, float]:
    """CPU time (user + system) of the live processes of each of `sessions` (the
    cluster's components each start a session of their own), by session."""
    tick = os.sysconf("SC_CLK_TCK")
    total = dict.fromkeys(sessions, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        session = int(fields[3])  # field 6 of stat(5)
        if session in total:
            total[session] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def scripts_run(cluster: Any) -> int:
    """EVALSHA calls Redis served so far (0 for a cluster without Redis)."""
    if not cluster.redis_port:
        return 0
    import redis

    with redis.Redis(host=cluster.bridge_address, port=cluster.redis_port,
                     password=cluster.redis_password or None) as client:
        stats: Any = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def measure(cluster: Any, url: str, duration: float, connections: int) -> dict[str, Any]:
    """One wrk round against `url`, with the cluster's CPU time and Redis scripts."""
    names = {pid: name for name, pid in cluster.pids.items()}
    cpu, scripts = cpu_seconds(set(names)), scripts_run(cluster)
    row = wrk(url, duration, connections=connections).to_dict()
    after = cpu_seconds(set(names))
    used = {names[pid]: (after[pid] - cpu[pid]) / row["requests"] * 1e6 for pid in names}
    row["cpu_us_per_request"] = sum(used.values())
    row["cpu_us_per_request_by_process"] = used
    row["scripts_per_request"] = (scripts_run(cluster) - scripts) / row["requests"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per replica")
    parser.add_argument("--single", action="store_true",
                        help="one replica, measured directly (no load balancer)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.single:
        args.replicas = 1
    if not (FUNCTIONS / "hello.wasm").exists():
        raise SystemExit("bench_cluster: run `make guests` first")
    script = load_cluster()
    rows: list[dict[str, Any]] = []
    clusters: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-bench-cluster-") as work:
        try:
            urls = {}
            for state in ("local", "redis"):
                cluster = clusters[state] = start(script, Path(work), state, args.replicas,
                                                  args.workers)
                urls[state] = f"{cluster.nodes[0].url if args.single else cluster.url}/hello"
                wrk(urls[state], 2.0, connections=args.connections)  # warm-up
            for number in range(1, args.rounds + 1):
                for state, cluster in clusters.items():
                    row = measure(cluster, urls[state], args.duration, args.connections)
                    row.update(state=state, round=number, replicas=args.replicas,
                               workers=args.workers, mode=cluster.mode,
                               balancer=not args.single)
                    rows.append(row)
        finally:
            for cluster in clusters.values():
                cluster.down()
    print(f"{'round':>5} {'state':<6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'cpu us/req':>10} {'scripts/req':>11}")
    for row in rows:
        errors = row["errors"]
        print(f"{row['round']:>5} {row['state']:<6} {row['requests_per_s']:>9.0f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {errors:>7} "
              f"{row['cpu_us_per_request']:>10.0f} {row['scripts_per_request']:>11.3f}")
    ratios = [redis["requests_per_s"] / local["requests_per_s"]
              for local, redis in zip(rows[0::2], rows[1::2], strict=True)]
    total = {state: sum(row["requests"] for row in rows if row["state"] == state)
             for state in clusters}
    overall = total["redis"] / total["local"]
    p99 = {state: statistics.median(row["p99_ms"] for row in rows if row["state"] == state)
           for state in clusters}
    print("redis/local throughput per round: "
          + ", ".join(f"{r:.3f}" for r in ratios)
          + f"; over all rounds {overall:.3f} (shared state costs {1 - overall:.1%}; "
          "goal < 15 %)")
    print(f"median p99: local {p99['local']:.2f} ms, redis {p99['redis']:.2f} ms")
    cpu = {state: statistics.median(row["cpu_us_per_request"] for row in rows
                                    if row["state"] == state) for state in clusters}
    print(f"median cluster CPU per request: local {cpu['local']:.0f} us, redis "
          f"{cpu['redis']:.0f} us (local/redis {cpu['local'] / cpu['redis']:.3f})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "redis_over_local": ratios,
                                         "overall": overall, "median_p99_ms": p99,
                                         "median_cpu_us_per_request": cpu},
                                        indent=2))
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Hello through one `stockade serve`: local state vs Redis state, measured with wrk in
one run (alternating, so both see the same machine).

    .venv/bin/python scripts/bench_state.py [--seconds 10] [--rounds 2] [--workers 2]

Each manifest gives the tenant a concurrency and a rate quota it never reaches, so
every request is admitted and released through the state (with Redis: the admission
script, quota and breaker in one round trip, and the release). Prints requests/s and
p99 per backend and the ratio; needs `redis-server` and `wrk` on PATH and built guests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "build" / "guests" / "functions" / "hello.wasm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manifest(backend: str, workers: int) -> str:
    return f"""
[server]
telemetry = "off"
access_log = "off"
workers = {workers}
[state]
backend = "{backend}"
[tenant.bench]
concurrency = 10000
rate = 1000000
[[function]]
name = "hello"
route = "/hello"
module = "{HELLO}"
tenant = "bench"
isolate = "none"
"""


def serve(path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen([sys.executable, "-m", "stockade", "serve", "-c", str(path),
                                "--port", "0"], stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    for raw in process.stderr:
        match = re.search(r"listening on (http://\S+)", raw.decode(errors="replace"))
        if match:
            return process, match.group(1)
    raise SystemExit(f"{path.name}: the server did not start")


def wrk(url: str, seconds: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url + "/hello"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers under load:\n{out}")
    return rps, p99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                                  "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=subprocess.DEVNULL)
        env = {**os.environ, "STOCKADE_STATE_DIR": str(base / "state")}
        results: dict[str, list[tuple[float, float]]] = {"local": [], "redis": []}
        try:
            time.sleep(0.2)
            for _ in range(args.rounds):
                for name, backend in (("local", "local"),
                                      ("redis", f"redis://127.0.0.1:{port}/0")):
                    path = base / f"{name}.toml"
                    path.write_text(manifest(backend, args.workers))
                    process, url = serve(path, env)
                    try:
                        wrk(url, 2)  # warm up
                        results[name].append(wrk(url, args.seconds))
                    finally:
                        process.terminate()
                        process.wait(60)
        finally:
            redis.terminate()
            redis.wait(10)
    best = {name: max(runs) for name, runs in results.items()}
    for name, runs in results.items():
        print(f"{name:5}  " + "  ".join(f"{rps:8.0f} req/s p99 {p99:6.2f} ms"
                                         for rps, p99 in runs))
    ratio = best["redis"][0] / best["local"][0]
    print(f"redis/local throughput (best runs): {ratio:.3f} (cost {100 * (1 - ratio):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load benchmark of `stockade serve` with wrk on loopback (bounded in time).

    .venv/bin/python benchmarks/bench_gateway.py [--rounds 10] [--seconds 2]
        [--isolate none|process] [--pin] [--ratio-only] [--json out.json]

1. The ratio to the ceiling (`stockade.bench.gatewayload`, the same code `stockade bench`
   runs for its goal row): a raw ASGI "hello" under the same server (uvicorn, uvloop,
   httptools, same worker count) and one gateway per telemetry mode of `--telemetry`
   (default: `off` and the server's default) all up at once, measured with
   `wrk -t2 -c32` in `--rounds` interleaved rounds of `--seconds` each (the order
   rotating every round); per mode, the median of the paired ratios (gateway / raw of
   the same round), so load from elsewhere on a shared machine falls on both sides
   alike; beside it, the servers' CPU per request (raw / gateway). With `--pin`, wrk
   runs on the last CPU and the servers on the others.
2. Unless `--ratio-only`, per telemetry mode in a freshly started gateway: the first
   request (modules already in the AoT cache), hello and the gateway's own /healthz for
   `--duration` seconds; and unless `--no-spin`, in the last mode, hello again while
   another tenant's `spin` function runs at its CPU limit (two clients that retry as
   `Retry-After` says; measured once its budget is spent).
Needs `make guests` and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stockade.bench.gatewayload import (
    Pinning,
    measure_ratios,
    missing,
    raw_server,
    start_gateway,
    stop,
    wrk,
)
from stockade.bench.stats import BenchError

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "build" / "guests" / "functions"

MANIFEST = """\
[server]
host = "127.0.0.1"
port = 0
workers = {workers}
executor = "{executor}"
{telemetry}

[tenant.web]
[tenant.batch]
concurrency = 2
cpu_per_minute = "{spin_cpu}"

[[function]]
name = "hello"
route = "/hello"
module = "{functions}/hello.wasm"
tenant = "web"
{isolate}

[[function]]
name = "spin"
route = "/spin"
module = "{functions}/spin.wasm"
tenant = "batch"
{isolate}
[function.limits]
timeout = "1s"
"""
# About 30 ms of CPU per request, well within the spin function's own limits: the tenant
# is held back by its CPU quota (429), not by violations (which would open its breaker).
SPIN_QUERY = "n=30000000"


def spin_client(url: str, stop: threading.Event) -> None:
    """Keep the spin function busy, honouring Retry-After (at most 2 s) like a polite
    client: the batch tenant then burns CPU at its quota, not faster."""
    while not stop.is_set():
        try:
            urllib.request.urlopen(url, timeout=10).read()
        except urllib.error.HTTPError as error:
            if error.code in (429, 503):
                stop.wait(min(2.0, float(error.headers.get("retry-after", "1"))))
        except OSError:
            stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved rounds of raw and gateway hello for the ratio")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="seconds per wrk run in a ratio round")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per wrk run of the other steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", default="auto", choices=["auto", "fast", "sandbox"])
    parser.add_argument("--telemetry", default="off,default",
                        help="comma-separated modes: an export profile, off, or default "
                             "(the server's own choice); each is measured in the same run")
    parser.add_argument("--isolate", choices=["process", "none", "profile"], default="none",
                        help="the functions' isolation (default none: in the gateway "
                             "worker; profile: their profile's, strict = a pool process)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the client to the last CPU and the servers to the others")
    parser.add_argument("--ratio-only", action="store_true", help="only step 1")
    parser.add_argument("--no-spin", action="store_true",
                        help="skip the noisy-neighbour step (hello beside a spinning tenant)")
    parser.add_argument("--spin-cpu", default="15s", help="the spin tenant's CPU per minute")
    parser.add_argument("--servers", action="store_true", help="also measure granian")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    reason = missing(FUNCTIONS)
    if reason is not None:
        raise SystemExit(f"bench_gateway: {reason}")
    modes = [mode.strip() for mode in args.telemetry.split(",") if mode.strip()]
    isolate = None if args.isolate == "profile" else args.isolate
    results: dict[str, Any] = {"workers": args.workers, "executor": args.executor,
                               "telemetry": modes, "isolate": args.isolate,
                               "load_average": os.getloadavg()}
    try:
        results["ratio"] = measure_ratios(FUNCTIONS, modes, rounds=args.rounds,
                                          seconds=args.seconds, workers=args.workers,
                                          isolate=isolate, pin=args.pin)
        if not args.ratio_only:
            pinning = Pinning.split() if args.pin else Pinning()
            if args.servers:
                process, url = raw_server(args.workers, pinning, "granian")
                try:
                    results["raw_asgi_granian"] = wrk(url, args.duration, pinning).to_dict()
                finally:
                    stop(process)
            for index, mode in enumerate(modes):
                spin = not args.no_spin and index == len(modes) - 1
                results[f"telemetry_{mode}"] = _measure_gateway(args, mode, isolate, spin,
                                                                pinning)
    except BenchError as exc:
        raise SystemExit(f"bench_gateway: {exc}") from None
    results["load_average_end"] = os.getloadavg()
    _report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _measure_gateway(args: argparse.Namespace, mode: str, isolate: str | None, spin: bool,
                     pinning: Pinning) -> dict[str, Any]:
    """Start a gateway with telemetry `mode` and measure its steps (see the docstring)."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-bench-") as tmp:
        manifest = Path(tmp) / "stockade.toml"
        telemetry = "" if mode == "default" else f'telemetry = "{mode}"'
        manifest.write_text(MANIFEST.format(
            workers=args.workers, executor=args.executor, telemetry=telemetry,
            spin_cpu=args.spin_cpu, functions=FUNCTIONS,
            isolate=f'isolate = "{isolate}"' if isolate else ""))
        env = {**os.environ, "STOCKADE_STATE_DIR": str(Path(tmp) / "state")}
        # A first start fills the AoT cache; the measured start maps modules from it.
        process, url, _ = start_gateway(manifest, env, pinning)
        stop(process)
        process, url, results["first_request_ms"] = start_gateway(manifest, env, pinning)
        try:
            results["hello"] = wrk(f"{url}/hello", args.duration, pinning).to_dict()
            results["healthz"] = wrk(f"{url}/healthz", args.duration, pinning).to_dict()
            if spin:
                results.update(_with_spin(url, args.duration, pinning))
        finally:
            stop(process)
    return results


def _with_spin(url: str, duration: float, pinning: Pinning) -> dict[str, Any]:
    """hello while the spin tenant is held at its CPU quota, and what spin got."""
    results: dict[str, Any] = {}
    done = threading.Event()
    spin_url = f"{url}/spin?{SPIN_QUERY}"
    spinners = [threading.Thread(target=spin_client, args=(spin_url, done), daemon=True)
                for _ in range(2)]
    for thread in spinners:
        thread.start()
    try:
        # Measure at the limit: once the tenant's budget is spent (its first 429).
        deadline = time.monotonic() + 120
        while '"spin",tenant="batch",code="429"' not in urllib.request.urlopen(
                f"{url}/metrics", timeout=10).read().decode():
            if time.monotonic() > deadline:
                raise SystemExit("bench_gateway: the spin tenant never reached its limit")
            time.sleep(0.5)
        results["hello_with_spin"] = wrk(f"{url}/hello", duration, pinning).to_dict()
    finally:
        done.set()
        for thread in spinners:
            thread.join()
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    results["spin_responses"] = {
        code: int(float(n)) for code, n in re.findall(
            r'requests_total\{function="spin",tenant="batch",code="(\d+)"\} (\S+)', metrics)}
    results["spin_cpu_s"] = sum(float(n) for n in re.findall(
        r'guest_cpu_seconds_total\{function="spin",tenant="batch"\} (\S+)', metrics))
    return results


def _f(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _report(results: dict[str, Any]) -> None:
    ratio = results["ratio"]
    load = " ".join(f"{x:.2f}" for x in results["load_average"])
    print(f"load average at start: {load}; {ratio['pinning']}; {ratio['workers']} workers; "
          f"functions isolate={results['isolate']}")
    print(f"raw ASGI hello (uvicorn): {ratio['raw_requests_per_s']:.0f} req/s (median of "
          f"{ratio['rounds_n']} rounds of {ratio['seconds']:g} s)")
    for mode in results["telemetry"]:
        value = ratio["ratio"][mode]
        rounds = ", ".join(f"{r:.3f}" for r in ratio["ratios"][mode])
        print(f"telemetry {mode}: hello {ratio['requests_per_s'][mode]:.0f} req/s; "
              f"hello / raw ASGI = {value:.3f} (median of paired rounds: {rounds}); "
              f"errors {ratio['errors'][mode]}")
        cpu = ratio["cpu_us_per_request"]
        print(f"  server CPU per request: raw {_f(cpu['raw'], 1)} µs, gateway "
              f"{_f(cpu[mode], 1)} µs; raw / gateway = {_f(ratio['cpu_ratio'][mode], 3)} "
              "(median of rounds)")
    rows = [(key, value) for key, value in results.items() if key.startswith("raw_asgi_")]
    for mode in results["telemetry"]:
        steps = results.get(f"telemetry_{mode}", {})
        rows += [(f"{mode}: {key}", value) for key, value in steps.items()
                 if isinstance(value, dict) and "requests_per_s" in value]
    if rows:
        print(f"{'step':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, value in rows:
        print(f"{name:<30}{value['requests_per_s']:>10.0f}{value['p50_ms']:>9.2f}"
              f"{value['p99_ms']:>9.2f}{value['errors']:>8}")
    for mode in results["telemetry"]:
        steps = results.get(f"telemetry_{mode}")
        if steps is None:
            continue
        print(f"telemetry {mode}: first request to a fresh gateway "
              f"{steps['first_request_ms']:.1f} ms")
        if "hello_with_spin" in steps:
            factor = steps["hello_with_spin"]["p99_ms"] / steps["hello"]["p99_ms"]
            print(f"  hello p99 with the spin tenant at its CPU limit: x{factor:.2f}; spin "
                  f"answers: {steps['spin_responses']}, guest CPU {steps['spin_cpu_s']:.1f} s")


if __name__ == "__main__":
    main()

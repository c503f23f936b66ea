"""Load benchmark of `stockade serve` with wrk on loopback (bounded in time).

    .venv/bin/python benchmarks/bench_gateway.py --duration 30 [--isolate none|process]
        [--json out.json]

In one run, each with 2 workers and `wrk -t2 -c32 --latency`:
1. the ceiling: a raw ASGI "hello" under the same server (uvicorn, uvloop, httptools),
   and with `--servers` the same app under granian for comparison;
2. per telemetry mode of `--telemetry` (default: `off` and the server's default, in
   that order, each in a freshly started gateway):
   the first request (modules already in the AoT cache), the hello function (C, CGI
   over WASI, a fresh instance per request), the gateway's own /healthz (the whole
   handler stack, no guest);
3. unless `--no-spin`, in the last mode: hello again while another tenant's `spin`
   function runs at its CPU limit (two clients that retry as `Retry-After` says;
   measured once its budget is spent).
Reports requests/s, p50, p99 and errors per step, and each mode's hello as a ratio to the
raw ASGI ceiling measured in the same run: the raw server stays up beside each gateway
and `--rounds` short runs of each alternate (raw, gateway, raw, ...), the ratio being
the median of the paired ratios, so load from elsewhere on a shared machine falls on
both sides alike. Needs `make guests` and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "build" / "guests" / "functions"
PYTHON = sys.executable

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


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling: the smallest ASGI app that answers "hello"."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")]})
    await send({"type": "http.response.body", "body": b"hello\n"})


def wrk(url: str, duration: float, connections: int = 32) -> dict[str, Any]:
    """Run wrk and parse requests/s, p50, p99 (ms) and errors."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency",
                          url], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = {"url": url.split("/", 3)[-1], "connections": connections}
    result["requests_per_s"] = float(_search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "99"):
        value, unit = _search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        result[f"p{pct}_ms"] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["socket_errors"] = sum(map(int, sockets.groups())) if sockets else 0
    result["requests"] = int(_search(r"(\d+) requests in", out).group(1))
    return result


def _search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"bench_gateway: unexpected wrk output:\n{text}")
    return match


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


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench_gateway: {url} did not come up")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def raw_server(server: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    """The raw ASGI app under uvicorn (uvloop, httptools) or granian."""
    here = str(Path(__file__).parent)
    if server == "uvicorn":
        command = [PYTHON, "-m", "uvicorn", "bench_gateway:raw_app", "--app-dir", here,
                   "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                   "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    else:
        command = [str(Path(PYTHON).parent / "granian"), "--interface", "asgi",
                   "--working-dir", here, "--port", str(port), "--workers", str(workers),
                   "--log-level", "warning", "--no-ws", "bench_gateway:raw_app"]
    process = subprocess.Popen(command)
    _wait_http(f"http://127.0.0.1:{port}/")
    return process


def start_gateway(manifest: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str,
                                                                float]:
    """`stockade serve`; returns the process, its URL and the first request's latency."""
    process = subprocess.Popen([PYTHON, "-m", "stockade", "serve", "-q", "-c", str(manifest)],
                               stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    for raw in process.stderr:
        line = raw.decode()
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
        sys.stderr.write(line)
    else:
        raise SystemExit("bench_gateway: the gateway did not start")
    start = time.perf_counter()
    urllib.request.urlopen(f"{url}/hello", timeout=10).read()
    first_ms = (time.perf_counter() - start) * 1000
    return process, url, first_ms


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", default="auto", choices=["auto", "fast", "sandbox"])
    parser.add_argument("--telemetry", default="off,default",
                        help="comma-separated modes: an export profile, off, or default "
                             "(the server's own choice); each is measured in the same run")
    parser.add_argument("--rounds", type=int, default=5,
                        help="paired raw/gateway hello runs per telemetry mode (each "
                             "--duration / rounds seconds) for the ratio")
    parser.add_argument("--no-spin", action="store_true",
                        help="skip the noisy-neighbour step (hello beside a spinning tenant)")
    parser.add_argument("--spin-cpu", default="15s", help="the spin tenant's CPU per minute")
    parser.add_argument("--servers", action="store_true", help="also measure granian")
    parser.add_argument("--isolate", choices=["process", "none"],
                        help="the functions' isolation (default: their profile's, strict)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not (FUNCTIONS / "hello.wasm").exists():
        raise SystemExit("bench_gateway: needs wrk and `make guests`")
    modes = [mode.strip() for mode in args.telemetry.split(",") if mode.strip()]
    results: dict[str, Any] = {"duration_s": args.duration, "workers": args.workers,
                               "executor": args.executor, "telemetry": modes,
                               "isolate": args.isolate or "profile",
                               "load_average": os.getloadavg()}
    raw_port = _free_port()
    raw = raw_server("uvicorn", raw_port, args.workers)
    try:
        results["raw_asgi_uvicorn"] = wrk(f"http://127.0.0.1:{raw_port}/", args.duration)
        if args.servers:
            port = _free_port()
            process = raw_server("granian", port, args.workers)
            try:
                results["raw_asgi_granian"] = wrk(f"http://127.0.0.1:{port}/", args.duration)
            finally:
                _stop(process)
        results["ratio_to_raw_asgi"] = {}
        for index, mode in enumerate(modes):
            spin = not args.no_spin and index == len(modes) - 1
            results[f"telemetry_{mode}"] = steps = _measure_gateway(
                args, mode, spin, f"http://127.0.0.1:{raw_port}/")
            results["ratio_to_raw_asgi"][mode] = steps["ratio"]
    finally:
        _stop(raw)
    _report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _measure_gateway(args: argparse.Namespace, mode: str, spin: bool,
                     raw_url: str) -> dict[str, Any]:
    """Start a gateway with telemetry `mode` and measure its steps, and its hello against
    the raw server at `raw_url` in alternating rounds (see the docstring)."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-bench-") as tmp:
        manifest = Path(tmp) / "stockade.toml"
        telemetry = "" if mode == "default" else f'telemetry = "{mode}"'
        manifest.write_text(MANIFEST.format(
            workers=args.workers, executor=args.executor, telemetry=telemetry,
            spin_cpu=args.spin_cpu, functions=FUNCTIONS,
            isolate=f'isolate = "{args.isolate}"' if args.isolate else ""))
        env = {**os.environ, "STOCKADE_STATE_DIR": str(Path(tmp) / "state")}
        # A first start fills the AoT cache; the measured start maps modules from it.
        process, url, _ = start_gateway(manifest, env)
        _stop(process)
        process, url, results["first_request_ms"] = start_gateway(manifest, env)
        try:
            results["hello"] = wrk(f"{url}/hello", args.duration)
            results["healthz"] = wrk(f"{url}/healthz", args.duration)
            results["rounds"] = rounds = []
            for _ in range(args.rounds):
                ceiling = wrk(raw_url, args.duration / args.rounds)["requests_per_s"]
                hello = wrk(f"{url}/hello", args.duration / args.rounds)["requests_per_s"]
                rounds.append({"raw_asgi": ceiling, "hello": hello, "ratio": hello / ceiling})
            results["ratio"] = statistics.median(r["ratio"] for r in rounds)
            if spin:
                results.update(_with_spin(url, args.duration))
        finally:
            _stop(process)
    return results


def _with_spin(url: str, duration: float) -> dict[str, Any]:
    """hello while the spin tenant is held at its CPU quota, and what spin got."""
    results: dict[str, Any] = {}
    stop = threading.Event()
    spin_url = f"{url}/spin?{SPIN_QUERY}"
    spinners = [threading.Thread(target=spin_client, args=(spin_url, stop), daemon=True)
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
        results["hello_with_spin"] = wrk(f"{url}/hello", duration)
    finally:
        stop.set()
        for thread in spinners:
            thread.join()
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    results["spin_responses"] = {
        code: int(float(n)) for code, n in re.findall(
            r'requests_total\{function="spin",tenant="batch",code="(\d+)"\} (\S+)', metrics)}
    results["spin_cpu_s"] = sum(float(n) for n in re.findall(
        r'guest_cpu_seconds_total\{function="spin",tenant="batch"\} (\S+)', metrics))
    return results


def _report(results: dict[str, Any]) -> None:
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in results['load_average'])}")
    print(f"{'step':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    rows = [(key, value) for key, value in results.items() if key.startswith("raw_asgi_")]
    for mode in results["telemetry"]:
        steps = results[f"telemetry_{mode}"]
        rows += [(f"{mode}: {key}", value) for key, value in steps.items()
                 if isinstance(value, dict) and "requests_per_s" in value]
    for name, value in rows:
        errors = value["non_2xx"] + value["socket_errors"]
        print(f"{name:<30}{value['requests_per_s']:>10.0f}{value['p50_ms']:>9.2f}"
              f"{value['p99_ms']:>9.2f}{errors:>8}")
    for mode in results["telemetry"]:
        steps = results[f"telemetry_{mode}"]
        ratios = ", ".join(f"{r['ratio']:.3f}" for r in steps["rounds"])
        print(f"telemetry {mode}: hello / raw ASGI = {steps['ratio']:.3f} (median of "
              f"paired rounds: {ratios}); first request to a fresh gateway "
              f"{steps['first_request_ms']:.1f} ms")
        if "hello_with_spin" in steps:
            ratio = steps["hello_with_spin"]["p99_ms"] / steps["hello"]["p99_ms"]
            print(f"  hello p99 with the spin tenant at its CPU limit: x{ratio:.2f}; spin "
                  f"answers: {steps['spin_responses']}, guest CPU {steps['spin_cpu_s']:.1f} s")


if __name__ == "__main__":
    main()

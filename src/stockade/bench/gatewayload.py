"""The gateway's throughput as a share of its server's ceiling, measured with wrk.

The ceiling is the smallest ASGI app that answers "hello" (`raw_app`) under the same
server the gateway runs on (uvicorn with uvloop and httptools, the same worker count).
`paired_ratios` keeps the raw server and one `stockade serve` per telemetry mode up
side by side and measures them in short interleaved rounds (the order rotating every
round), each round's gateway figure divided by the raw figure of the same round: load
from elsewhere on a shared machine falls on both sides alike, and the median of the
paired ratios is the figure. Beside it, the servers' own CPU time per request (their
process trees, from /proc) gives a second ratio, raw CPU per request over the gateway's,
which load from elsewhere barely moves: on a saturated server, throughput is the inverse
of CPU per request. With `pin`, the client (wrk) runs on the last CPU and every
server on the others: steadier rounds on a loaded machine, but two workers then share
one core, which costs the gateway (more threads, more switches) more than the raw app
(quiet 2-core machine: 0.14 pinned vs 0.23 unpinned), so it is not the default.

Used by `stockade bench` (the goal row) and by `benchmarks/bench_gateway.py` (which adds
first-request latency, /healthz and a noisy neighbour). Needs wrk and the `hello`
function guest (`build/guests/functions/hello.wasm`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stats import BenchError

__all__ = ["raw_app", "wrk", "WrkResult", "Pinning", "raw_server", "start_gateway",
           "stop", "gateway_manifest", "paired_ratios", "tree_cpu_seconds", "measure_ratios",
           "GOAL_RATIO", "DEFAULT_MODES", "missing"]

GOAL_RATIO = 0.40  # gateway hello / raw ASGI hello, default telemetry
DEFAULT_MODES = ("off", "default")  # telemetry off, and the server's own choice
PYTHON = sys.executable
_WRK_THREADS = 2
_CONNECTIONS = 32


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


@dataclass(frozen=True)
class Pinning:
    """CPUs for the client and for the servers (empty: not pinned)."""

    client: tuple[int, ...] = ()
    servers: tuple[int, ...] = ()

    @classmethod
    def split(cls) -> Pinning:
        """The last usable CPU for the client, the others for the servers; unpinned on a
        machine with one CPU or without `taskset`."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls()
        return cls((cpus[-1],), tuple(cpus[:-1]))

    def wrap(self, command: list[str], server: bool) -> list[str]:
        """`command` run on its CPUs (through taskset), or as it is."""
        cpus = self.servers if server else self.client
        if not cpus:
            return command
        return ["taskset", "-c", ",".join(map(str, cpus)), *command]

    def describe(self) -> str:
        """For the report: which CPUs each side had."""
        if not self.client:
            return "not pinned"
        return (f"client on CPU {','.join(map(str, self.client))}, servers on CPU "
                f"{','.join(map(str, self.servers))}")


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests/s, p50 and p99 (ms), requests and errors."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return dict(self.__dict__)


def wrk(url: str, duration: float, pinning: Pinning = Pinning(),
        connections: int = _CONNECTIONS) -> WrkResult:
    """Run `wrk -t2 -c<connections> --latency` on `url` for `duration` seconds (whole
    seconds, at least one: wrk takes no fractions). Raises BenchError when wrk is missing
    or fails."""
    command = pinning.wrap(["wrk", f"-t{_WRK_THREADS}", f"-c{connections}",
                            f"-d{max(1, round(duration))}s", "--latency", url], server=False)
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=duration + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"wrk failed: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    out = done.stdout
    percentiles = {}
    for pct in ("50", "99"):
        value, unit = _search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        percentiles[pct] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + \
        (sum(map(int, sockets.groups())) if sockets else 0)
    return WrkResult(float(_search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                     percentiles["50"], percentiles["99"],
                     int(_search(r"(\d+) requests in", out).group(1)), errors)


def _search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    if match is None:
        raise BenchError(f"unexpected wrk output: {text.strip()[:500]}")
    return match


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{url} did not come up within {timeout:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Drain a server (SIGTERM), killing it after 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_server(workers: int, pinning: Pinning = Pinning(),
               server: str = "uvicorn") -> tuple[subprocess.Popen[bytes], str]:
    """`raw_app` under uvicorn (uvloop, httptools, as the gateway) or granian; returns
    the process and its URL."""
    port = _free_port()
    app = f"{__name__}:raw_app"
    if server == "uvicorn":
        command = [PYTHON, "-m", "uvicorn", app, "--port", str(port), "--workers",
                   str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"]
    else:
        command = [str(Path(PYTHON).parent / "granian"), "--interface", "asgi", "--port",
                   str(port), "--workers", str(workers), "--log-level", "warning", "--no-ws",
                   app]
    process = subprocess.Popen(pinning.wrap(command, server=True))
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url)
    except BaseException:
        stop(process)
        raise
    return process, url


MANIFEST = """\
[server]
host = "127.0.0.1"
port = 0
workers = {workers}
{telemetry}

[tenant.web]

[[function]]
name = "hello"
route = "/hello"
module = "{functions}/hello.wasm"
tenant = "web"
{isolate}
"""


def gateway_manifest(functions: Path, workers: int, mode: str, isolate: str | None) -> str:
    """A manifest serving the hello function with telemetry `mode` (`default`: the
    server's own choice) and `isolate` (None: its profile's)."""
    return MANIFEST.format(
        workers=workers, functions=functions,
        telemetry="" if mode == "default" else f'telemetry = "{mode}"',
        isolate=f'isolate = "{isolate}"' if isolate else "")


def start_gateway(manifest: Path, env: dict[str, str], pinning: Pinning = Pinning(),
                  timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str, float]:
    """`stockade serve -q -c manifest`, its stderr in `manifest` with suffix `.log`;
    returns the process, its URL and the first request's latency (ms). Raises
    BenchError when it does not start within `timeout` seconds."""
    command = pinning.wrap([PYTHON, "-m", "stockade", "serve", "-q", "-c", str(manifest)],
                           server=True)
    log = manifest.with_suffix(".log")
    # A file, not a pipe: nothing has to keep reading it while the gateway runs.
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, env=env)
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        match = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if match:
            url = match.group(1)
        elif process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            lines = log.read_text(errors="replace").strip().splitlines()
            raise BenchError("the gateway did not start: " + " / ".join(lines[-5:]))
        else:
            time.sleep(0.05)
    start = time.perf_counter()
    urllib.request.urlopen(f"{url}/hello", timeout=30).read()
    return process, url, (time.perf_counter() - start) * 1000


@contextlib.contextmanager
def _gateways(functions: Path, modes: Sequence[str], workers: int, isolate: str | None,
              pinning: Pinning) -> Iterator[dict[str, tuple[str, int]]]:
    """One started gateway per telemetry mode: mode -> URL of its hello function and
    the gateway's pid."""
    with tempfile.TemporaryDirectory(prefix="stockade-gateway-bench-") as tmp:
        processes: list[subprocess.Popen[bytes]] = []
        urls: dict[str, tuple[str, int]] = {}
        try:
            for mode in modes:
                manifest = Path(tmp) / f"{mode}.toml"
                manifest.write_text(gateway_manifest(functions, workers, mode, isolate))
                env = {**os.environ, "STOCKADE_STATE_DIR": str(Path(tmp) / f"state-{mode}")}
                process, url, _ = start_gateway(manifest, env, pinning)
                processes.append(process)
                urls[mode] = (f"{url}/hello", process.pid)
            yield urls
        finally:
            for process in processes:
                stop(process)


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and its live descendants (/proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


def _measured(url: str, pid: int, seconds: float, pinning: Pinning) -> dict[str, Any]:
    """One wrk run on a server, with the server's CPU seconds per request."""
    before = tree_cpu_seconds(pid)
    found = wrk(url, seconds, pinning)
    cpu = tree_cpu_seconds(pid) - before
    # None when the CPU time is below the clock tick (a starved server) or nothing ran.
    return {**found.to_dict(),
            "cpu_us_per_request": cpu / found.requests * 1e6 if found.requests and cpu > 0
            else None}


def _median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def paired_ratios(servers: dict[str, tuple[str, int]], rounds: int, seconds: float,
                  pinning: Pinning = Pinning()) -> dict[str, Any]:
    """Interleaved rounds of wrk on every server of `servers` (name -> URL and pid; the
    first one, "raw", is the ceiling), the order rotating every round. Per gateway mode:
    the paired throughput ratios to the same round's raw figure and their median
    (`ratio`), and the CPU-cost ratios (raw CPU per request / the gateway's, `cpu_ratio`)."""
    targets = list(servers.items())
    modes = [name for name, _ in targets[1:]]
    rows: list[dict[str, dict[str, Any]]] = []
    for number in range(rounds):
        shift = number % len(targets)
        rows.append({name: _measured(url, pid, seconds, pinning)
                     for name, (url, pid) in targets[shift:] + targets[:shift]})
    out: dict[str, Any] = {"rounds": rows}
    ratios = {mode: [row[mode]["requests_per_s"] / row["raw"]["requests_per_s"]
                     for row in rows if row["raw"]["requests_per_s"] > 0] for mode in modes}
    out["ratios"] = ratios
    out["ratio"] = {mode: _median(values) for mode, values in ratios.items()}
    cpu_ratios = {mode: [row["raw"]["cpu_us_per_request"] / row[mode]["cpu_us_per_request"]
                         for row in rows if row["raw"]["cpu_us_per_request"]
                         and row[mode]["cpu_us_per_request"]] for mode in modes}
    out["cpu_ratios"] = cpu_ratios
    out["cpu_ratio"] = {mode: _median(values) for mode, values in cpu_ratios.items()}
    out["cpu_us_per_request"] = {name: _median([row[name]["cpu_us_per_request"]
                                                for row in rows]) for name, _ in targets}
    out["errors"] = {name: sum(row[name]["errors"] for row in rows) for name, _ in targets}
    out["raw_requests_per_s"] = _median([row["raw"]["requests_per_s"] for row in rows])
    out["requests_per_s"] = {mode: _median([row[mode]["requests_per_s"] for row in rows])
                             for mode in modes}
    return out


def missing(functions: Path) -> str | None:
    """Why the measurement cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "wrk is not installed"
    if not (functions / "hello.wasm").exists():
        return f"{functions / 'hello.wasm'} is missing (run: make guests)"
    return None


def measure_ratios(functions: Path, modes: Sequence[str] = DEFAULT_MODES, *,
                   rounds: int = 10, seconds: float = 2.0, workers: int = 2,
                   isolate: str | None = "none", pin: bool = False) -> dict[str, Any]:
    """The hello function's requests/s as a share of the raw ASGI ceiling, per telemetry
    mode, all servers up at once and measured in interleaved rounds (`paired_ratios`).
    `isolate` None uses the function's profile (`strict`: a pool process). Raises
    BenchError when something it needs is missing or a server fails."""
    reason = missing(functions)
    if reason is not None:
        raise BenchError(reason)
    pinning = Pinning.split() if pin else Pinning()
    raw, raw_url = raw_server(workers, pinning)
    try:
        with _gateways(functions, modes, workers, isolate, pinning) as urls:
            # Warm every server up (connections, caches, the fast path's pool) unrecorded.
            for url in (raw_url, *(url for url, _ in urls.values())):
                wrk(url, 1.0, pinning)
            results = paired_ratios({"raw": (raw_url, raw.pid), **urls}, rounds, seconds,
                                    pinning)
    finally:
        stop(raw)
    results.update({"workers": workers, "isolate": isolate or "profile", "rounds_n": rounds,
                    "seconds": seconds, "pinning": pinning.describe(),
                    "connections": _CONNECTIONS, "wrk_threads": _WRK_THREADS,
                    "server": "uvicorn (uvloop, httptools)", "modes": list(modes)})
    return results

"""CPU per request of the gateway's own work, without HTTP: the handler of a worker
(`GatewayService.handler`, the `Pipeline`) answering the hello function in-process.

`benchmarks/bench_gateway.py` measures a request end to end, the HTTP server, the
client and the gateway sharing two cores; this measures only what the gateway adds,
and where within it:

- `handler`: one request through the whole handler stack (routing, limits, CGI, the
  run, the response, metrics and telemetry), the `Request` as the worker's protocol
  builds it;
- `run`: the function's inline run alone (`try_inline`: the engine, the result and
  the telemetry observers), each with a parent span the handler's tracer began;
- `native`: the fast path's native run alone (a fresh instance of hello, `_start`), each
  with a deadline an hour ahead.

Each figure is CPU time (`time.process_time`) per request over `--requests`, in a fresh
process per round and telemetry mode (`off` and the server's default), the rounds
interleaved and their order rotating, each process with its own cache, state and
configuration directories and a gateway worker's allocator settings
(`stockade.allocator`); the median over `--rounds`. With `--against SRC` another source
tree (its `src/`, its native library built) runs in the same rounds: a change measured
side by side with what it changed. Medians of a few rounds still move by 10% from one
run to the next on a shared machine: compare trees in one run, never with a figure from
another.

    .venv/bin/python scripts/measure_handler.py [--rounds 5] [--requests 20000]
        [--against /tmp/base/src] [--json F]

Needs `make guests`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "build" / "guests" / "functions" / "hello.wasm"
MODES = ("off", "default")
MANIFEST = """\
[server]
host = "127.0.0.1"
port = 0
workers = 1
{telemetry}

[tenant.web]

[[function]]
name = "hello"
route = "/hello"
module = "{module}"
tenant = "web"
isolate = "none"
"""


def child(mode: str, requests: int) -> dict[str, float]:
    """In this process: the three figures (µs of CPU per request) for `mode`."""
    from stockade.engine.fastpath import _run
    from stockade.gateway.invoke import HttpInvocation
    from stockade.gateway.messages import Request
    from stockade.gateway.service import GatewayService

    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "gateway.toml"
        manifest.write_text(MANIFEST.format(
            module=HELLO, telemetry="" if mode == "default" else f'telemetry = "{mode}"'))
        service = GatewayService(manifest)
        service.load()
        service.start()
        # As a serving worker's (`started`); a tree from before it wrote inline.
        background = getattr(service.telemetry, "write_in_background", None)
        if background is not None:
            background()
        try:
            return _measure(service, requests, Request, HttpInvocation, _run)
        finally:
            service.close()


def _measure(service: Any, requests: int, request_type: Any, invocation_type: Any,
             run_module: Any) -> dict[str, float]:
    handler, route = service.handler, service.registry.routes.match("/hello")

    def request() -> Any:
        made = request_type(method="GET", path="/hello", query="",
                            headers=[(b"host", b"127.0.0.1:8000")],
                            client=("127.0.0.1", 40000), server=("127.0.0.1", 8000),
                            scheme="http", http_version="1.1", raw_path=b"/hello",
                            receive=None)
        made.body, made.body_read = b"", True  # as the protocol does for a GET
        return made

    async def answer(count: int) -> None:
        for _ in range(count):
            response = await handler(request())
            if response.status != 200:
                raise SystemExit(f"measure_handler: hello answered {response.status}")

    prepared = route.prepared
    tracer = handler.tracer

    def invocations(count: int) -> list[Any]:
        """Invocations as the handler makes them, each with a parent its tracer began
        (sampled as the profile says: one parent for all would make every run sampled,
        or none)."""
        made = []
        for _ in range(count):
            traced = request()
            if tracer is not None:
                tracer.begin(traced)
            parent = traced.state["trace"].as_parent() if "trace" in traced.state else None
            made.append(invocation_type.of_request(b"", route.spec, (),
                                                   prepared.cgi.block(traced), parent))
        return made

    invocation = invocations(1)[0]
    engine, plan = prepared._engine, prepared._inline_plan
    slot = engine._admit(plan.module)
    run_module._run_native(plan, slot, prepared._env(invocation), b"", 1 << 62)
    native, arguments, native_in = run_module.NATIVE_RUN, slot.native_args, slot.native_in
    engine._release(plan.module, slot)

    def handled() -> None:
        asyncio.run(answer(requests))

    made = invocations(requests)  # built before: the run alone is measured

    def ran() -> None:
        for each in made:
            prepared.try_inline(each)

    def native_runs() -> None:
        for _ in range(requests):
            # Each its own deadline ahead, as a run has (the slot's last one is past: a
            # past one has every run signal the deadline thread, which then stops it).
            native_in.deadline_ns = time.monotonic_ns() + 3_600_000_000_000
            native(*arguments)

    figures = {}
    for name, work in (("handler", handled), ("run", ran), ("native", native_runs)):
        work()  # warm-up: caches, series, first-run paths
        start = time.process_time()
        work()
        figures[name] = (time.process_time() - start) / requests * 1e6
    return figures


def environment(base: Path) -> dict[str, str]:
    """`measure_startup`'s (Stockade's directories under `base`: the default telemetry
    writes its file there) with the allocator a gateway worker starts with."""
    from measure_startup import environment as fresh_directories  # this folder's

    from stockade.allocator import run_tunables

    return {**fresh_directories(base), **run_tunables()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--against", type=Path, help="another tree's src/ directory")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.requests)))
        return 0
    if not HELLO.exists():
        print(f"measure_handler: {HELLO} is missing: run `make guests` first", file=sys.stderr)
        return 2
    trees = {"this": ROOT / "src"}
    if args.against:
        trees["against"] = args.against.resolve()
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as base:
        env = environment(Path(base))
        runs = [(tree, src, mode) for tree, src in trees.items() for mode in MODES]
        for round_ in range(args.rounds):
            turn = round_ % len(runs)  # the order rotates: no tree always runs first
            for tree, src, mode in runs[turn:] + runs[:turn]:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--requests",
                     str(args.requests)], env={**env, "PYTHONPATH": str(src)},
                    capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"measure_handler: {tree} tree, telemetry {mode}:\n"
                          f"{out.stderr.strip()}", file=sys.stderr)
                    return 1
                samples.setdefault((tree, mode), []).append(json.loads(out.stdout))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    report: dict[str, Any] = {}
    for (tree, mode), rounds in samples.items():
        medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        report[f"{tree}/{mode}"] = medians
        print(f"{tree:8s} telemetry {mode:8s} " + "  ".join(
            f"{name} {value:6.1f} µs" for name, value in medians.items()))
    if args.against:
        for mode in MODES:
            now, before = report[f"this/{mode}"], report[f"against/{mode}"]
            print(f"this / against, telemetry {mode}: " + "  ".join(
                f"{name} {now[name] / before[name]:.3f}" for name in now))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

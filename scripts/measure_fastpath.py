"""Per-call cost of a fresh-instance hello on the C-API fast path (the in-process goal),
and where it goes: the native run (the `wall_s` it reports) and the Python around it.

The run is `benchmarks/bench_fastpath.py`'s `test_fastpath`: `FastModule.run` with
argv, stdin, a fuel budget, a timeout and an output cap. With `--against SRC`, the same
is measured for another source tree (a `src/` directory, its native library built) in
the same run: rounds alternate between the two, each a fresh process, so a noisy
neighbour hits both alike; the figure is the median over rounds of each process's
median. `--callgrind` also counts instructions per call (valgrind, the difference of a
run with and without the calls).

    .venv/bin/python scripts/measure_fastpath.py [--rounds 7] [--calls 20000]
        [--against /tmp/base/src] [--callgrind]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
HELLO = ROOT / "build" / "guests" / "hello.wasm"

# One process: warm up, then time `calls` runs; print medians (µs) as JSON.
CHILD = r"""
import json, sys, time
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine
wasm = open(sys.argv[1], "rb").read()
calls = int(sys.argv[2])
total, native = [], []
with FastEngine(EngineConfig(), max_instances=4) as engine:
    module = engine.compile(wasm, "hello.wasm")
    for _ in range(500):  # the same warm-up for every count: callgrind subtracts them
        module.run(["bench"], stdin=b"one line of input\n", fuel=10**9, timeout_s=10.0,
                   max_output=1024**2)
    for _ in range(calls):
        started = time.perf_counter_ns()
        result = module.run(["bench"], stdin=b"one line of input\n", fuel=10**9,
                            timeout_s=10.0, max_output=1024**2)
        total.append(time.perf_counter_ns() - started)
        native.append(result.wall_s * 1e9)
if calls:
    total.sort(); native.sort()
    print(json.dumps({"total": total[calls // 2] / 1e3, "native": native[calls // 2] / 1e3}))
"""


def child_env(src: Path | None) -> dict[str, str]:
    """This environment, with `src` first on the path when given."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def measure(src: Path | None, calls: int) -> dict[str, float]:
    """Medians (µs) of one fresh process: total per call, native part, Python part."""
    out = subprocess.run([str(PYTHON), "-c", CHILD, str(HELLO), str(calls)], check=True,
                         capture_output=True, text=True, env=child_env(src)).stdout
    figures: dict[str, float] = json.loads(out)
    figures["python"] = figures["total"] - figures["native"]
    return figures


def instructions(src: Path | None, calls: int) -> float:
    """Instructions per call under callgrind (a run of `calls` less a run of none)."""
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (0, calls):
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                 str(PYTHON), "-c", CHILD, str(HELLO), str(n)],
                check=True, capture_output=True, text=True, env=child_env(src))
            found = re.search(r"refs:\s+([\d,]+)", done.stderr)
            if found is None:
                raise SystemExit("callgrind printed no instruction count")
            counts.append(int(found.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--against", type=Path, help="another source tree's src/ directory")
    parser.add_argument("--callgrind", action="store_true")
    options = parser.parse_args()
    trees: dict[str, Path | None] = {"this checkout": None}
    if options.against is not None:
        trees["against"] = options.against.resolve()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(options.rounds):
        for name, src in trees.items():
            rounds[name].append(measure(src, options.calls))
    for name, found in rounds.items():
        parts = {key: statistics.median(r[key] for r in found)
                 for key in ("total", "native", "python")}
        print(f"{name}: per call {parts['total']:.1f} µs (native run {parts['native']:.1f}, "
              f"Python {parts['python']:.1f}), median of {options.rounds} rounds")
    if options.callgrind:
        for name, src in trees.items():
            print(f"{name}: {instructions(src, 1000):,.0f} instructions per call (callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

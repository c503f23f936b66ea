"""Noisy neighbour: how much four hostile guests slow a benign one.

    .venv/bin/python benchmarks/noisy_neighbour.py [--rounds 7] [--hostile-cpu 0.25]

The benign guest (compute kernel + I/O echo) runs in-process under the default profile,
first on a quiet machine, then while four hostile guests from the attack suite (CPU loop,
fsync storm, tiny-I/O flood, memory growth) run over and over in parallel isolated
workers, each capped by its cgroup at `--hostile-cpu` of a core. Quiet and noisy rounds
alternate so drift hits both; the report is the ratio of medians (goal: under 2x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from stockade import Invocation, Policy, Sandbox
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.policy import DirGrant

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "build" / "guests"
HOSTILE = {
    "cpu_loop": ("attacks/cpu_loop.wasm", ("120",)),
    "fsync_storm": ("attacks/fsync_storm.wasm", ("fsync", "30")),
    "tiny_writes": ("attacks/tiny_io.wasm", ("write", "30")),
    "memory_grow": ("attacks/memory_grow.wasm", ("4000",)),
}


def benign_once(sandbox: Sandbox, modules: tuple[object, object]) -> float:
    started = time.perf_counter()
    compute, echo = modules
    assert sandbox.run(compute, Invocation(args=("2000000",))).ok  # type: ignore[arg-type]
    assert sandbox.run(echo, Invocation(stdin=b"x" * (4 << 20))).ok  # type: ignore[arg-type]
    return time.perf_counter() - started


def hostile_loop(name: str, cpu: float, stop: threading.Event, runs: dict[str, int]) -> None:
    module, args = HOSTILE[name]
    with tempfile.TemporaryDirectory() as scratch:
        policy = Policy.from_profile("default").with_limits(timeout=3.0).with_capabilities(
            dirs=(DirGrant(Path(scratch), "/scratch", writable=True),))
        with IsolatedSandbox(policy, config=IsolationConfig(cpu_quota=cpu)) as sandbox:
            while not stop.is_set():
                sandbox.run(GUESTS / module, Invocation(args=args))
                runs[name] = runs.get(name, 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hostile-cpu", type=float, default=0.25)
    options = parser.parse_args()
    sandbox = Sandbox(Policy.from_profile("default"))
    modules = (sandbox.load(GUESTS / "compute.wasm"), sandbox.load(GUESTS / "hello.wasm"))
    benign_once(sandbox, modules)  # warm-up
    quiet: list[float] = []
    noisy: list[float] = []
    runs: dict[str, int] = {}
    for _ in range(options.rounds):
        quiet.append(benign_once(sandbox, modules))
        stop = threading.Event()
        threads = [threading.Thread(target=hostile_loop, args=(n, options.hostile_cpu, stop, runs))
                   for n in HOSTILE]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # let the workers start and the attacks ramp up
        noisy.append(benign_once(sandbox, modules))
        stop.set()
        for thread in threads:
            thread.join()
    report = {
        "quiet_ms": {"min": min(quiet) * 1e3, "median": statistics.median(quiet) * 1e3,
                     "max": max(quiet) * 1e3},
        "noisy_ms": {"min": min(noisy) * 1e3, "median": statistics.median(noisy) * 1e3,
                     "max": max(noisy) * 1e3},
        "ratio": statistics.median(noisy) / statistics.median(quiet),
        "hostile_cpu_per_worker": options.hostile_cpu,
        "hostile_runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

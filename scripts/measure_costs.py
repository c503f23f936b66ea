"""Where compute time goes under limits: each wasmtime cost alone, against native.

Runs the `stockade bench` compute kernels (FNV-1a, SHA-256, sieve, quicksort; the
`compute` guest's hot loop, start-up excluded) under engine variants that each switch
one thing (fuel, epochs, both, Cranelift's optimisation level, signal-based traps,
explicit bounds checks), then under each Stockade profile through `Sandbox`, and the
native build of the same source. Rounds interleave the variants, so a noisy neighbour
hits them alike; the figure per kernel is the fastest hot loop over the rounds (noise
on a shared machine only ever adds time; the medians go to `--json`).

    .venv/bin/python scripts/measure_costs.py [--rounds 7] [--variant medium]
        [--clock hot|cpu] [--json F]

`--clock hot` takes the guest's own hot-loop time (wall clock, start-up excluded);
`--clock cpu` the CPU time of the whole run (start-up included: use `--variant large`),
which a busy machine disturbs less: time spent waiting for a core is not counted.

Prints one table: ratio to native per kernel, and the geometric mean.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from stockade.bench.plan import COMPUTE_SIZES  # noqa: E402
from stockade.bench.workloads import KERNELS  # noqa: E402

GUEST = ROOT / "build/guests/bench/compute.wasm"
NATIVE = ROOT / "build/native/bench/compute"
_HOT = re.compile(rb"hot_ns=(\d+)")
_SIZES = {"small": 0, "medium": 1, "large": 2}

def _set(config: wasmtime.Config, **settings: object) -> None:
    for key, value in settings.items():
        setattr(config, key, value)


# name -> (what it changes, config setter). Every variant starts from wasmtime's defaults.
_VARIANTS: dict[str, tuple[str, Callable[[wasmtime.Config], None]]] = {
    "bare": ("no fuel, no epochs (wasmtime defaults)", lambda c: None),
    "epochs": ("epoch interruption only", lambda c: setattr(c, "epoch_interruption", True)),
    "fuel": ("fuel metering only", lambda c: setattr(c, "consume_fuel", True)),
    "fuel+epochs": ("fuel and epochs (the old default profile)", lambda c: _set(
        c, consume_fuel=True, epoch_interruption=True)),
    "opt=speed_and_size": ("no metering, cranelift opt_level speed_and_size",
                           lambda c: setattr(c, "cranelift_opt_level", "speed_and_size")),
    "no-signals": ("no metering, signals_based_traps off (explicit checks)",
                   lambda c: setattr(c, "signals_based_traps", False)),
    "bounds-checked": ("no metering, no guard pages (explicit bounds checks)", lambda c: _set(
        c, memory_reservation=1 << 27, memory_guard_size=0)),
    "stack=512KiB": ("no metering, 512 KiB wasm stack (strict's)",
                     lambda c: setattr(c, "max_wasm_stack", 512 * 1024)),
    "epochs+threads": ("epochs and the threads proposal (what Stockade's engines set)",
                       lambda c: _set(c, epoch_interruption=True, wasm_threads=True)),
}


CLOCK = "hot"


def _hot_ns(stdout: bytes) -> int:
    found = _HOT.search(stdout)
    if found is None:
        raise RuntimeError(f"no hot_ns in the guest's output: {stdout[:200]!r}")
    return int(found.group(1))


class _Raw:
    """One wasmtime-py engine variant: a fresh store and instance per run."""

    def __init__(self, setter: Callable[[wasmtime.Config], None], scratch: Path) -> None:
        config = wasmtime.Config()
        setter(config)
        self.engine = wasmtime.Engine(config)
        self.module = wasmtime.Module.from_file(self.engine, str(GUEST))
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        self.pre = linker.instantiate_pre(self.module)
        self.out = scratch / f"out-{id(self)}"

    def run(self, kernel: str, size: int) -> int:
        store = wasmtime.Store(self.engine)
        # Both settings are harmless when the engine does not meter: set them always.
        try:
            store.set_fuel(2**62)
        except wasmtime.WasmtimeError:
            pass
        store.set_epoch_deadline(2**62)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["compute", kernel, str(size)]
        wasi.stdout_file = str(self.out)
        store.set_wasi(wasi)
        cpu0 = time.thread_time_ns()
        instance = self.pre.instantiate(store)
        start = instance.exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as exc:
            if exc.code:
                raise
        cpu = time.thread_time_ns() - cpu0
        return cpu if CLOCK == "cpu" else _hot_ns(self.out.read_bytes())


class _Profile:
    """Stockade's `Sandbox` under a built-in profile."""

    def __init__(self, name: str) -> None:
        from stockade.invocation import Invocation
        from stockade.policy import Policy
        from stockade.sandbox import Sandbox

        self.invocation = Invocation
        # Metered as the profile is, with room for the large kernels (a budget and a memory
        # limit cost nothing per instruction; the engine configuration does).
        policy = Policy.from_profile(name)
        policy = policy.with_limits(max_memory=max(policy.limits.max_memory, 256 * 1024**2))
        if policy.limits.fuel is not None:
            policy = policy.with_limits(fuel=10**13)
        self.sandbox = Sandbox(policy)
        self.loaded = self.sandbox.load(GUEST)
        self.describe = self.sandbox.engine_config.describe()

    def run(self, kernel: str, size: int) -> int:
        result = self.sandbox.run(self.loaded, self.invocation(args=(kernel, str(size))))
        if not result.ok:
            raise RuntimeError(f"{result.outcome.value}: {result.message}")
        return int(result.usage.cpu_ms * 1e6) if CLOCK == "cpu" else _hot_ns(result.stdout)


def _native(kernel: str, size: int) -> int:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([str(NATIVE), kernel, str(size)], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return int(cpu * 1e9) if CLOCK == "cpu" else _hot_ns(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; `--json FILE` also writes the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variant", choices=tuple(_SIZES), default="medium")
    parser.add_argument("--clock", choices=("hot", "cpu"), default="hot")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    global CLOCK
    CLOCK = options.clock
    sizes = {k: COMPUTE_SIZES[k][_SIZES[options.variant]] for k in KERNELS}
    with tempfile.TemporaryDirectory(prefix="stockade-costs-") as scratch:
        runners: dict[str, Callable[[str, int], int]] = {"native": _native}
        notes = {"native": "clang -O2, same source"}
        for name, (note, setter) in _VARIANTS.items():
            runners[name] = _Raw(setter, Path(scratch)).run
            notes[name] = note
        for profile in ("strict", "default", "permissive"):
            sandbox = _Profile(profile)
            runners[f"profile {profile}"] = sandbox.run
            notes[f"profile {profile}"] = f"Sandbox: {sandbox.describe}"
        samples: dict[str, dict[str, list[int]]] = {n: {k: [] for k in KERNELS} for n in runners}
        for kernel in KERNELS:  # one warm-up each
            for run in runners.values():
                run(kernel, sizes[kernel])
        for _ in range(options.rounds):
            for kernel in KERNELS:
                for name, run in runners.items():
                    samples[name][kernel].append(run(kernel, sizes[kernel]))
    medians = {n: {k: statistics.median(v) for k, v in per.items()} for n, per in samples.items()}
    best = {n: {k: min(v) for k, v in per.items()} for n, per in samples.items()}
    native = best["native"]
    what = "hot loop" if CLOCK == "hot" else "run's CPU time"
    print(f"compute kernels ({options.variant}), fastest {what} of {options.rounds} rounds, "
          "ratio to native")
    print(f"{'variant':22}" + "".join(f"{k:>9}" for k in KERNELS) + f"{'geomean':>9}  what")
    table = {}
    for name, per in best.items():
        ratios = [per[k] / native[k] for k in KERNELS]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        table[name] = {"ratios": dict(zip(KERNELS, ratios, strict=True)), "geomean": geomean,
                       "best_ns": per, "median_ns": medians[name],
                       "note": notes[name]}
        print(f"{name:22}" + "".join(f"{r:9.2f}" for r in ratios) + f"{geomean:9.2f}  "
              f"{notes[name]}")
    if options.json:
        options.json.write_text(json.dumps({"variant": options.variant, "rounds": options.rounds,
                                            "clock": CLOCK,
                                            "sizes": sizes, "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where compute time goes under limits: each wasmtime cost alone, against native.

Runs the `stockade bench` compute kernels (FNV-1a, SHA-256, sieve, quicksort; the
`compute` guest's hot loop, start-up excluded) under engine variants that each switch
one thing from wasmtime's defaults (fuel, epochs, Cranelift's optimisation level and NaN
canonicalisation, signal-based traps, the memory's reservation and guard, the wasm
stack), with the guest rewritten for a tripwire deadline (`engine.tripwire`), under
the fast path's pooling allocator (`FastEngine`, its slot shape), under
each Stockade profile through `Sandbox`, and with the guest and its native twin both
built with other clang flags (`--flags`); against the native build of the same source.
Rounds interleave the variants, so a noisy neighbour hits them alike; the figure per
kernel is the median over the rounds (`--stat best` takes the fastest instead: noise on a
shared machine only ever adds time); both go to `--json`.

    .venv/bin/python scripts/measure_costs.py [--rounds 7] [--variant medium]
        [--clock hot|cpu] [--stat median|best] [--flags "-O3" ...] [--only NAME ...]
        [--json F]

`--clock hot` takes the guest's own hot-loop time (wall clock, start-up excluded);
`--clock cpu` the CPU time of the whole run (start-up included: use `--variant large`),
which a busy machine disturbs less: time spent waiting for a core is not counted.

Prints one table: ratio to native per kernel, and the geometric mean. A `clang FLAGS`
row runs the guest built with FLAGS under epochs only (what the default profile pays)
and is divided by the native binary built with the same FLAGS.
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
from typing import Any

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from stockade.bench.plan import COMPUTE_SIZES  # noqa: E402
from stockade.bench.workloads import KERNELS  # noqa: E402
from stockade.engine import EngineConfig  # noqa: E402

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
    "opt=none": ("no metering, cranelift opt_level none",
                 lambda c: setattr(c, "cranelift_opt_level", "none")),
    "nan-canon": ("no metering, cranelift NaN canonicalisation",
                  lambda c: setattr(c, "cranelift_nan_canonicalization", True)),
    "bounds-checked": ("no metering, no guard pages (explicit bounds checks)", lambda c: _set(
        c, memory_reservation=1 << 27, memory_guard_size=0)),
    "reserve=128MiB": ("no metering, 128 MiB reservation + default guard (checked loads)",
                       lambda c: _set(c, memory_reservation=1 << 27)),
    "guard=0": ("no metering, 4 GiB reservation, no guard region",
                lambda c: _set(c, memory_guard_size=0)),
    "dynamic": ("no metering, memory may move (no reservation, no guard)", lambda c: _set(
        c, memory_reservation=0, memory_guard_size=0, memory_may_move=True)),
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

    def __init__(self, setter: Callable[[wasmtime.Config], None], scratch: Path,
                 guest: Path = GUEST) -> None:
        config = wasmtime.Config()
        setter(config)
        self.engine = wasmtime.Engine(config)
        self.module = wasmtime.Module.from_file(self.engine, str(guest))
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


class _Pool:
    """The fast path (`FastEngine`, the pooling allocator) with `config`: the slot shape
    the gateway and `stockade bench`'s fast host run in."""

    def __init__(self, config: EngineConfig, scratch: Path) -> None:
        from stockade.engine.fastpath import FastEngine

        self.engine = FastEngine(config, max_instances=4, max_memory=256 * 1024**2)
        self.module = self.engine.compile(GUEST.read_bytes(), "compute")
        self.fuel = (1 << 62) if config.fuel else None
        self.timeout = 600.0 if config.epochs or config.tripwire else None
        self.describe = config.describe()

    def run(self, kernel: str, size: int) -> int:
        cpu0 = time.thread_time_ns()  # the run happens on this thread (GIL released)
        result = self.module.run((kernel, str(size)), fuel=self.fuel,
                                 timeout_s=self.timeout)
        cpu = time.thread_time_ns() - cpu0
        if result.exit_code != 0:
            raise RuntimeError(f"{result.outcome.value}: {result.message}")
        return cpu if CLOCK == "cpu" else _hot_ns(result.stdout)


def _roomy(policy: Any) -> Any:
    """`policy` metered as its profile is, with room for the large kernels (a budget and a
    memory limit cost nothing per instruction; the engine configuration does)."""
    policy = policy.with_limits(max_memory=max(policy.limits.max_memory, 256 * 1024**2))
    if policy.limits.fuel is not None:
        policy = policy.with_limits(fuel=10**13)
    return policy


class _Profile:
    """Stockade's `Sandbox` under a built-in profile."""

    def __init__(self, name: str) -> None:
        from stockade.invocation import Invocation
        from stockade.policy import Policy
        from stockade.sandbox import Sandbox

        self.invocation = Invocation
        policy = _roomy(Policy.from_profile(name))
        self.sandbox = Sandbox(policy)
        self.loaded = self.sandbox.load(GUEST)
        self.describe = self.sandbox.engine_config.describe()

    def run(self, kernel: str, size: int) -> int:
        result = self.sandbox.run(self.loaded, self.invocation(args=(kernel, str(size))))
        if not result.ok:
            raise RuntimeError(f"{result.outcome.value}: {result.message}")
        return int(result.usage.cpu_ms * 1e6) if CLOCK == "cpu" else _hot_ns(result.stdout)


class _CapiProfile(_Profile):
    """The C-API sandbox (`stockade run`'s backend) under a built-in profile."""

    def __init__(self, name: str) -> None:
        from stockade.invocation import Invocation
        from stockade.policy import Policy
        from stockade.sandbox.capi import CapiSandbox

        self.invocation = Invocation
        policy = _roomy(Policy.from_profile(name))
        self.sandbox: Any = CapiSandbox(policy)  # `run(path, invocation)` as Sandbox's
        self.loaded: Any = GUEST
        self.describe = EngineConfig.for_limits(policy.limits).describe()


class _Isolated(_Profile):
    """`IsolatedSandbox` (`stockade run --isolate process`) under a built-in profile: a
    C-API worker whose deadline is its process's (`process_deadline`, no epochs) or, with
    `epochs`, its engine's."""

    def __init__(self, name: str, epochs: bool) -> None:
        from stockade.invocation import Invocation
        from stockade.isolate import IsolatedSandbox, IsolationConfig
        from stockade.policy import Policy

        self.invocation = Invocation
        policy = _roomy(Policy.from_profile(name))
        config = IsolationConfig(process_deadline=not epochs)
        self.sandbox = IsolatedSandbox(policy, config=config)
        self.loaded = GUEST
        engine = EngineConfig.for_limits(policy.limits, process_deadline=not epochs
                                         and policy.limits.fuel is None)
        self.describe = f"{self.sandbox.backend} worker: {engine.describe()}"


class _Native:
    """The native binary of the same source."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, kernel: str, size: int) -> int:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([str(self.binary), kernel, str(size)], capture_output=True,
                              check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return int(cpu * 1e9) if CLOCK == "cpu" else _hot_ns(done.stdout)


# WebAssembly target features: the native twin keeps its own target's baseline instead.
_WASM_ONLY = ("-msimd128", "-mbulk-memory", "-mnontrapping-fptoint", "-msign-ext")


def _build(flags: str, out: Path) -> tuple[Path, Path]:
    """The compute guest and its native twin, both built with clang `flags` (as
    scripts/build_guests.py builds them, the flags replacing the source's `// build:`;
    WebAssembly feature flags go to the guest only)."""
    source = ROOT / "guests/bench/compute.c"
    out.mkdir(parents=True)
    wasm, native = out / "compute.wasm", out / "compute"
    native_flags = [flag for flag in flags.split() if flag not in _WASM_ONLY]
    for cmd in (["clang", "--target=wasm32-wasi", *flags.split(), "-Wl,--strip-all", "-o",
                 str(wasm), str(source)],
                ["clang", *native_flags, "-s", "-static", "-o", str(native), str(source),
                 "-lm"]):
        subprocess.run(cmd, check=True)
    return wasm, native


def _runners(scratch: Path, flags: list[str]
             ) -> tuple[dict[str, Callable[[str, int], int]], dict[str, str], dict[str, str]]:
    """Every variant's runner, its note and the native row it is divided by."""
    runners: dict[str, Callable[[str, int], int]] = {"native": _Native(NATIVE).run}
    notes = {"native": "clang -O2, same source"}
    baseline = {"native": "native"}
    for name, (note, setter) in _VARIANTS.items():
        runners[name] = _Raw(setter, scratch).run
        notes[name] = note
    from stockade.engine import tripwire

    wired = scratch / "compute-tripwire.wasm"
    wired.write_bytes(tripwire.instrument(GUEST.read_bytes()))
    runners["tripwire"] = _Raw(lambda c: None, scratch, wired).run
    notes["tripwire"] = "no fuel, no epochs, a tripwire load at each loop and call"
    for name, config in (("pool", EngineConfig(fuel=False, epochs=False)),
                         ("pool epochs", EngineConfig(fuel=False, epochs=True)),
                         ("pool tripwire", EngineConfig(fuel=False, epochs=False,
                                                        tripwire=True))):
        pool = _Pool(config, scratch)
        runners[name] = pool.run
        notes[name] = f"FastEngine (pooling allocator): {pool.describe}"
    for profile in ("strict", "default", "permissive"):
        sandbox = _Profile(profile)
        runners[f"profile {profile}"] = sandbox.run
        notes[f"profile {profile}"] = f"Sandbox: {sandbox.describe}"
    capi = _CapiProfile("default")
    runners["capi default"] = capi.run
    notes["capi default"] = f"CapiSandbox (stockade run): {capi.describe}"
    for name, epochs in (("isolated default", False), ("isolated default epochs", True)):
        isolated = _Isolated("default", epochs)
        runners[name] = isolated.run
        notes[name] = f"IsolatedSandbox (--isolate process), {isolated.describe}"
    for index, option in enumerate(flags):
        wasm, binary = _build(option, scratch / f"flags{index}")
        native = f"native {option}"
        runners[native] = _Native(binary).run
        notes[native] = f"clang {option}, same source"
        runners[f"clang {option}"] = _Raw(lambda c: setattr(c, "epoch_interruption", True),
                                          scratch, wasm).run
        notes[f"clang {option}"] = f"guest built with {option}, epochs only"
        baseline[native] = baseline[f"clang {option}"] = native
    for name in runners:
        baseline.setdefault(name, "native")
    return runners, notes, baseline


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; `--json FILE` also writes the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variant", choices=tuple(_SIZES), default="medium")
    parser.add_argument("--clock", choices=("hot", "cpu"), default="hot")
    parser.add_argument("--stat", choices=("median", "best"), default="median")
    parser.add_argument("--flags", action="append", default=[],
                        help="also build guest and native with these clang flags")
    parser.add_argument("--only", action="append", default=[],
                        help="run only these rows (and the natives they are divided by)")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    global CLOCK
    CLOCK = options.clock
    sizes = {k: COMPUTE_SIZES[k][_SIZES[options.variant]] for k in KERNELS}
    with tempfile.TemporaryDirectory(prefix="stockade-costs-") as scratch:
        runners, notes, baseline = _runners(Path(scratch), options.flags)
        if options.only:
            keep = set(options.only) | {baseline[n] for n in options.only if n in baseline}
            runners = {n: r for n, r in runners.items() if n in keep}
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
    figure = medians if options.stat == "median" else best
    what = "hot loop" if CLOCK == "hot" else "run's CPU time"
    stat = "median" if options.stat == "median" else "fastest"
    print(f"compute kernels ({options.variant}), {stat} {what} of {options.rounds} rounds, "
          "ratio to native")
    print(f"{'variant':22}" + "".join(f"{k:>9}" for k in KERNELS) + f"{'geomean':>9}  what")
    table = {}
    for name, per in figure.items():
        native = figure[baseline[name]]
        ratios = [per[k] / native[k] for k in KERNELS]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        table[name] = {"ratios": dict(zip(KERNELS, ratios, strict=True)), "geomean": geomean,
                       "best_ns": best[name], "median_ns": medians[name],
                       "baseline": baseline[name], "note": notes[name]}
        print(f"{name:22}" + "".join(f"{r:9.2f}" for r in ratios) + f"{geomean:9.2f}  "
              f"{notes[name]}")
    if options.json:
        options.json.write_text(json.dumps({"variant": options.variant, "rounds": options.rounds,
                                            "clock": CLOCK, "stat": options.stat,
                                            "sizes": sizes, "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

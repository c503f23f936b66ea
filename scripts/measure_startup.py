"""`stockade run hello.wasm` against `python -c "import wasmtime"`: the start-up goal.

Both commands run on this machine in the same run, in fresh temporary cache, state and
config directories (so the default profile and the default telemetry, the local
OTLP-JSON file, are what is measured). A warm-up run of each writes the `.pyc` files and
the AoT cache entry first. Then:

- wall clock: `--rounds` interleaved runs of each (a noisy neighbour hits both alike);
  the figure is the median of the per-round ratios, with both medians; the same for
  CPU time (user + system, of the child: waiting for a core is not counted, so a busy
  machine disturbs it less);
- instructions (`--callgrind`): the total Ir of one run of each under
  `valgrind --tool=callgrind --collect-systime=no`, each after its own warm-up under
  valgrind too (valgrind shows the engine other CPU features, so the cache entry the
  native warm-up wrote may be compiled again once).

    .venv/bin/python scripts/measure_startup.py [--rounds 15] [--callgrind] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
STOCKADE = ROOT / ".venv" / "bin" / "stockade"
HELLO = ROOT / "build" / "guests" / "hello.wasm"


def commands() -> dict[str, list[str]]:
    """The two commands compared, by name."""
    return {"import wasmtime": [str(PYTHON), "-c", "import wasmtime"],
            "stockade run": [str(STOCKADE), "run", str(HELLO)]}


def environment(base: Path) -> dict[str, str]:
    """This process's environment with Stockade's directories under `base`, and bytecode
    caching on (the warm-up writes the `.pyc` files both commands then read)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("STOCKADE_", "OTEL_")) and key != "PYTHONDONTWRITEBYTECODE"}
    for name in ("CACHE", "STATE", "CONFIG"):
        path = base / name.lower()
        path.mkdir(mode=0o700, exist_ok=True)
        env[f"STOCKADE_{name}_DIR"] = str(path)
    return env


def wall(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run (its output discarded; a failure stops the
    measurement)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def instructions(command: list[str], env: dict[str, str]) -> int:
    """Total Ir of one run under callgrind, after a warm-up run under valgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", "--collect-systime=no",
                f"--callgrind-out-file={out}", *command]
        for _ in range(2):
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from callgrind:\n{done.stderr}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions under valgrind's callgrind")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    options = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-startup-") as tmp:
        env = environment(Path(tmp))
        named = commands()
        for command in named.values():
            wall(command, env)  # .pyc files, the key, the AoT cache entry
        times: dict[str, list[float]] = {name: [] for name in named}
        cpu: dict[str, list[float]] = {name: [] for name in named}
        for _ in range(options.rounds):
            for name, command in named.items():
                elapsed, used = wall(command, env)
                times[name].append(elapsed)
                cpu[name].append(used)
        for label, values in (("wall", times), ("cpu", cpu)):
            ratios = [run / base for run, base in zip(values["stockade run"],
                                                       values["import wasmtime"], strict=True)]
            medians = {name: round(statistics.median(v) * 1e3, 1) for name, v in values.items()}
            figures[f"{label}_ms"] = medians
            figures[f"{label}_ratio_median"] = round(statistics.median(ratios), 3)
            print(f"{label}, median of {options.rounds} interleaved rounds: "
                  f"import wasmtime {medians['import wasmtime']} ms, "
                  f"stockade run {medians['stockade run']} ms, "
                  f"ratio {figures[f'{label}_ratio_median']}")
        if options.callgrind:
            if shutil.which("valgrind") is None:
                raise SystemExit("valgrind is not installed")
            counts = {name: instructions(command, env) for name, command in named.items()}
            figures["instructions"] = counts
            figures["instruction_ratio"] = round(counts["stockade run"]
                                                 / counts["import wasmtime"], 3)
            print(f"instructions (callgrind Ir): import wasmtime {counts['import wasmtime']:,}, "
                  f"stockade run {counts['stockade run']:,}, "
                  f"ratio {figures['instruction_ratio']}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

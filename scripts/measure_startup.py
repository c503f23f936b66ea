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

With `--against SRC` a third command, `stockade run` from another source tree (its
`src/` directory first on PYTHONPATH, its native library built), runs in the same rounds:
before and after a change, measured side by side.

    .venv/bin/python scripts/measure_startup.py [--rounds 15] [--callgrind] [--json F]
        [--against /tmp/base/src]
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


AGAINST = "stockade run (against)"


def commands(against: Path | None = None) -> dict[str, list[str]]:
    """The commands compared, by name (`against`: a source tree's `src/` to run too)."""
    named = {"import wasmtime": [str(PYTHON), "-c", "import wasmtime"],
             "stockade run": [str(STOCKADE), "run", str(HELLO)]}
    if against is not None:
        named[AGAINST] = [str(STOCKADE), "run", str(HELLO)]
    return named


def environments(base: dict[str, str], against: Path | None) -> dict[str, dict[str, str]]:
    """Each command's environment: `base`, with `against` first on the path of its run."""
    envs = {"import wasmtime": base, "stockade run": base}
    if against is not None:
        envs[AGAINST] = {**base, "PYTHONPATH": str(against.resolve())}
    return envs


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
    parser.add_argument("--against", type=Path,
                        help="also run `stockade run` from this source tree's src/")
    options = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-startup-") as tmp:
        envs = environments(environment(Path(tmp)), options.against)
        named = commands(options.against)
        for name, command in named.items():
            wall(command, envs[name])  # .pyc files, the key, the AoT cache entry
        times: dict[str, list[float]] = {name: [] for name in named}
        cpu: dict[str, list[float]] = {name: [] for name in named}
        for _ in range(options.rounds):
            for name, command in named.items():
                elapsed, used = wall(command, envs[name])
                times[name].append(elapsed)
                cpu[name].append(used)
        runs = [name for name in named if name != "import wasmtime"]
        for label, values in (("wall", times), ("cpu", cpu)):
            medians = {name: round(statistics.median(v) * 1e3, 1) for name, v in values.items()}
            figures[f"{label}_ms"] = medians
            for name in runs:
                ratios = [run / base for run, base in zip(values[name],
                                                           values["import wasmtime"],
                                                           strict=True)]
                suffix = name.removeprefix("stockade run").replace(" ", "_")
                figures[f"{label}_ratio_median{suffix}"] = round(statistics.median(ratios), 3)
                print(f"{label}, median of {options.rounds} interleaved rounds: "
                      f"import wasmtime {medians['import wasmtime']} ms, "
                      f"{name} {medians[name]} ms, "
                      f"ratio {figures[f'{label}_ratio_median{suffix}']}")
        if options.callgrind:
            if shutil.which("valgrind") is None:
                raise SystemExit("valgrind is not installed")
            counts = {name: instructions(command, envs[name])
                      for name, command in named.items()}
            figures["instructions"] = counts
            for name in runs:
                suffix = name.removeprefix("stockade run").replace(" ", "_")
                figures[f"instruction_ratio{suffix}"] = round(
                    counts[name] / counts["import wasmtime"], 3)
                print(f"instructions (callgrind Ir): import wasmtime "
                      f"{counts['import wasmtime']:,}, {name} {counts[name]:,}, "
                      f"ratio {figures[f'instruction_ratio{suffix}']}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

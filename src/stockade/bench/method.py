"""The report's method section: how the numbers were taken, in words and plan figures."""

from __future__ import annotations

from .markdown import markdown_table
from .results import BenchResults
from .stats import OUTLIER_FENCE

__all__ = ["method_section"]

TEXT = """\
- **Timing.** Every backend is driven by its own agent process (`python -m
  stockade.bench.agent`), so the harness's progress bars never share a process with a
  measurement. Process backends run through a small static launcher (`rusage`, built with
  the native guests): the clock starts just before its `vfork` and stops when it reaps the
  child (`wait4`, which also gives CPU time and peak RSS of the child and its reaped
  children); *first output* is the first byte on its stdout. Linux counts the memory a
  process had before `exec` in the peak RSS of what it execs: forked from the agent, every
  process showed the agent's ~22 MB; forked from the launcher, its own (a static hello
  about 0.5 MiB). In-process backends: the clock
  covers creating the instance, running `_start` and collecting the output; the module is
  compiled or loaded from the cache before the clock starts. Kernels time their own hot loop
  (`hot_ns`), so compute ratios exclude start-up.
- **Cold start** is request to first output from a new process with nothing loaded but the
  OS page cache: `stockade run` with a primed AoT cache, `stockade run` with an empty cache
  (compile included), a native process, `crun run`, `node` per request.
  `python -c "import wasmtime"` is the reference floor for a Python CLI.
- **Warm latency** is per request in a long-lived host with a fresh instance each time
  (Stockade `Sandbox`, bare wasmtime-py, Pulley, node:wasi, Extism); for process backends
  every request is a new process, so their warm and cold rows are the same runs. The
  isolated worker is a process too, but a warm one that times no first output: it has no
  cold-start figure.
- **Interleaving.** For each workload the backends run round-robin in rounds, the order
  rotating every round, so drift on this shared machine hits all of them alike.
- **Warm-up and outliers.** Each backend first runs unrecorded warm-up iterations. No sample
  is dropped: percentiles are linear interpolation over all recorded samples, outliers
  (beyond {fence:g} IQR from the quartiles) are counted and shown, and min / median / max show
  the noise.
- **Checksums.** Every kernel prints a checksum; echo output is hashed; the report lists any
  backend that disagrees.
- **Containers.** The benchmark builds the root filesystem (the static binaries in /bin) and an
  OCI bundle per argv. Plain `crun run` fails on this host ("cgroups in hybrid mode not
  supported"), so the container agent runs under `unshare -m`, detaches
  `/sys/fs/cgroup/unified` in that private mount namespace only, and runs
  `crun --cgroup-manager=disabled`: containers get pid, network, ipc, uts and mount
  namespaces but no cgroup limits.
- **Limits.** Stockade runs the `default` profile (no fuel, 128 MiB memory; the deadline a
  tripwire in-process, in `Sandbox` and on the C API alike, the process in an isolated
  worker) with the output cap raised to 64 MiB for the 16 MiB echo. Bare wasmtime and
  Pulley run with no fuel, no epochs and no limits.
- **Extism** passes no argv or stdin to WASI command modules, so it runs hello only (its
  WASI stdout is enabled with `EXTISM_ENABLE_WASI_OUTPUT=1`). The syscall loop calls
  `getpid` natively; WASI has no getpid, so the Wasm build calls `fd_fdstat_get` (the
  cheapest WASI call) instead. The native CPython row runs the system `python3`, a
  different build of CPython. Node runs with `--single-threaded`: without it V8 (node 20)
  aborted in most runs of the 16 MiB memcpy guest on this machine.
"""


def method_section(results: BenchResults) -> str:
    """Markdown: the method text plus the plan's iteration counts."""
    plan = results.meta.get("plan", {})
    counts = plan.get("counts", {})
    costs = ("fast", "spawn", "slow", "compile")
    rows = [[group, *[str(counts[group].get(c, "—")) for c in costs]] for group in counts]
    rows.append(["warm-up", *[str(plan.get("warmup", {}).get(c, "—")) for c in costs]])
    table = markdown_table(["recorded samples", "fast (in-process)", "spawn (native, crun)",
                            "slow (Python/node process, interpreter)",
                            "compile (empty cache)"], rows)
    backends = markdown_table(["backend", "kind", "how"],
                              [[b.name, b.kind, b.note] for b in results.backends])
    machine = results.meta.get("machine", {})
    tools = ("Compiler: one clang for both, native binaries by `clang -O2 -static`, Wasm by "
             f"`clang --target=wasm32-wasi -O2` ({machine.get('clang')}), so native vs Wasm "
             "compares code generators, not compilers. Versions: wasmtime-py "
             f"{machine.get('wasmtime_py')}, node {machine.get('node')}, "
             f"{machine.get('crun')}, extism {machine.get('extism')}, "
             f"Python {machine.get('python')}.")
    return "\n\n".join([
        "## Method", TEXT.replace("{fence:g}", f"{OUTLIER_FENCE:g}"),
        f"Rounds: {plan.get('rounds')}. Samples per (backend, workload), by cost class:",
        table, tools, "Backends:", backends,
    ])

"""The quick probe: this machine's own start-up and compute figures in under 30 s, for
advice when no saved `stockade bench` run is given."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from .figures import Figure, from_results

__all__ = ["probe", "PROBE_BACKENDS"]

# Native is the baseline and always runs; crun is skipped (with its reason) where absent.
PROBE_BACKENDS = ("stockade", "stockade-fast", "stockade-run", "crun")


def probe(build: Path | None = None) -> list[Figure]:
    """Measure with the `probe` plan using the benchmark guests under `build` (None: the
    installed package's or the checkout's). Raises UsageError when they are missing."""
    from ..bench import Options, get_plan, run_bench
    from ..bench.hosts.base import Layout

    layout = Layout.under(build)
    if not layout.wasm("noop").exists() or not layout.native("noop").exists():
        raise UsageError(f"--probe: no benchmark guests under {layout.wasm_dir.parent.parent} "
                         "(run `make guests` in "
                         "the Stockade checkout, or pass --build DIR)")
    workdir = Path(tempfile.mkdtemp(prefix="stockade-probe-"))
    try:
        results = run_bench(Options(plan=get_plan("probe"), layout=layout, workdir=workdir,
                                    only=PROBE_BACKENDS))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return from_results(results, "quick probe on this machine (stockade advise --probe)")

"""Backends that start one process per invocation: native binaries, `stockade run` (from
the AoT cache, or from `.wasm` with an empty cache), `node` per request, and the
`python -c "import wasmtime"` reference."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from ...rmtree import remove_tree
from .base import Host, HostUnavailable, Layout, Request, Sample
from .node import NODE_FLAGS
from .process import LAUNCHER, measure_process

__all__ = ["CommandHost", "STOCKADE_RUN_FLAGS"]

# The default profile, with room for a 16 MiB echo plus its report line on stderr.
STOCKADE_RUN_FLAGS = ("--profile", "default", "--max-output", "64MiB")
KINDS = ("native", "stockade-run", "stockade-wasm", "node-run", "python-import")


class CommandHost(Host):
    """Starts a process per request; `options["kind"]` is one of `KINDS`.

    Options: `stockade` (the CLI executable), `cache_dir` (AoT cache of `stockade-run`),
    `node` and `script` (node and the node:wasi host script), `python` (interpreter for
    the native CPython row and the import reference).
    """

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        self.kind = str(options.get("kind"))
        if self.kind not in KINDS:
            raise HostUnavailable(f"unknown process backend {self.kind!r}")
        self.launcher = layout.native(LAUNCHER)
        if not self.launcher.is_file():
            raise HostUnavailable(f"no launcher {self.launcher} (run: python "
                                  "scripts/build_guests.py)")
        self.env = dict(os.environ)
        if self.kind == "stockade-run":
            self.env["STOCKADE_CACHE_DIR"] = str(options["cache_dir"])
        if self.kind in ("stockade-run", "stockade-wasm"):
            _compile_bytecode()

    def command(self, request: Request) -> list[str]:
        """The command line that runs `request`."""
        if self.kind == "native":
            if request.guest == "python":
                return [str(self.options["python"]), *request.args]
            return [str(self.layout.native(request.guest)), *request.args]
        if self.kind == "python-import":
            return [str(self.options["python"]), "-c", "import wasmtime"]
        wasm = str(self.layout.wasm(request.guest))
        if self.kind == "node-run":
            return [str(self.options["node"]), *NODE_FLAGS, str(self.options["script"]),
                    "once", wasm, *request.args]
        stdin = ["--stdin", request.stdin] if request.stdin else []
        return [str(self.options["stockade"]), "run", *STOCKADE_RUN_FLAGS, *stdin, wasm,
                "--", *request.args]

    def run(self, request: Request) -> Sample:
        """Start the process and time it (a fresh, empty AoT cache for `stockade-wasm`)."""
        env = self.env
        scratch = None
        if self.kind == "stockade-wasm":
            # Compile included: nothing cached, so the run pays for compilation.
            scratch = tempfile.mkdtemp(prefix="stockade-bench-cache-")
            env = {**self.env, "STOCKADE_CACHE_DIR": scratch}
        stdin = None if self.kind == "python-import" else request.stdin
        try:
            return measure_process(self.command(request), stdin, env,
                                   launcher=self.launcher).sample
        finally:
            if scratch:
                failure = remove_tree(scratch)
                if failure is not None:
                    logging.getLogger("stockade.bench").warning("could not remove %s", failure)


def _compile_bytecode() -> None:
    """Write Stockade's bytecode, as `pip install` does: a checkout run with
    PYTHONDONTWRITEBYTECODE (or never imported since an edit) would otherwise compile
    its changed modules from source in every measured process, unlike the wasmtime-py
    reference, which is installed."""
    import compileall
    from pathlib import Path

    compileall.compile_dir(str(Path(__file__).resolve().parents[2]), quiet=1)


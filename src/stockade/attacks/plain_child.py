"""The child process of a baseline run: one module under plain wasmtime defaults.

    python -m stockade.attacks.plain_child --result R --stdout O --stderr E \\
        [--dir HOST:GUEST:ro|rw]... MODULE [ARGS...]

Default `wasmtime.Engine()` (no fuel, no epochs), no store limits, WASI with the given
preopens, output to files, empty stdin, no environment. It writes how the guest ended
as JSON to R: `{"outcome": "exited"|"trap"|"error", "exit_code", "message"}`.
Nothing of Stockade is used here, on purpose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """The child: plain `wasmtime.Engine()` defaults, WASI with the given preopens."""
    parser = argparse.ArgumentParser(prog="stockade.attacks.plain_child")
    for name in ("result", "stdout", "stderr"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--dir", action="append", default=[])
    parser.add_argument("module")
    parser.add_argument("args", nargs="*")
    options = parser.parse_args(argv)

    import wasmtime

    report: dict[str, object] = {"outcome": "exited", "exit_code": 0, "message": ""}
    try:
        engine = wasmtime.Engine()
        module = wasmtime.Module.from_file(engine, options.module)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [Path(options.module).name, *options.args]
        wasi.stdout_file = options.stdout
        wasi.stderr_file = options.stderr
        for spec in options.dir:
            host, guest, mode = spec.rsplit(":", 2)
            wasi.preopen_dir(host, guest, mode == "rw")
        store.set_wasi(wasi)
        instance = linker.instantiate(store, module)
        start = instance.exports(store).get("_start")
        if not isinstance(start, wasmtime.Func):
            raise LookupError("no _start export (not a WASI command)")
        start(store)
    except wasmtime.ExitTrap as exc:
        report = {"outcome": "exited", "exit_code": exc.code, "message": ""}
    except wasmtime.Trap as exc:
        report = {"outcome": "trap", "exit_code": None, "message": str(exc).splitlines()[0]}
    except (wasmtime.WasmtimeError, LookupError) as exc:
        first = str(exc).strip().splitlines()
        report = {"outcome": "error", "exit_code": None, "message": first[0] if first else ""}
    Path(options.result).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A module file rewritten in place between runs, with its size and modification time
put back, is read again: the worker's memory of a file is keyed by its change time too,
which a writer cannot restore."""

from __future__ import annotations

import os
from pathlib import Path

from stockade import Policy
from stockade.isolate import IsolatedSandbox

_EXITS = '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32))) ' \
         '(memory (export "memory") 1) (func (export "_start") (call $exit (i32.const %d))))'


def test_a_rewrite_that_restores_size_and_mtime_runs_the_new_module(tmp_path: Path) -> None:
    module = tmp_path / "exits.wat"
    module.write_text(_EXITS % 3)
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        assert sandbox.run(module).exit_code == 3
        before = module.stat()
        module.write_text(_EXITS % 4)  # the same size: one digit for another
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert module.stat().st_size == before.st_size
        assert sandbox.run(module).exit_code == 4

"""A guest cannot choose its run's verdict by naming its functions.

A WASI call wasmtime fails with an error (rights it cannot convert; an exit status of 126
or more, before Stockade served `proc_exit` itself) comes back with the guest's
backtrace, which shows the names in the module's name section. The verdict reads
wasmtime's causes only (`traps.root_cause`): a function named "interrupt" made the run
a `timeout` (exit 124, 504 at the gateway), "all fuel consumed" a `fuel_exhausted`
without any fuel budget, a start function named "memory_limit" a `memory_limit` (137),
and "gc heap out of memory" a `memory_limit`: outcomes breakers and the audit log count
(found by review).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import stockade

EXIT = '(call $exit (i32.const 200))'  # wasmtime's WASI fails exit codes past 125
# rights_base = -1: wasmtime fails the call itself (not a trap, not an errno)
OPEN = ('(drop (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 1) '
        '(i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64)))')


def forging(name: str, body: str, at_start: bool) -> str:
    """A module whose function `name` makes the failing call, from `_start` or as the
    module's start function (run at instantiation)."""
    entry = '(start $f) (func (export "_start"))' if at_start \
        else '(func (export "_start") (call $f))'
    return ('(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32))) '
            '(import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 '
            'i32 i64 i64 i32 i32) (result i32))) (memory (export "memory") 1) '
            f'(data (i32.const 16) "x") (func $f (@name "{name}") {body}) {entry})')


@pytest.mark.parametrize(("name", "body", "at_start"), [
    ("interrupt", EXIT, False),
    ("interrupt", OPEN, False),
    ("all fuel consumed", OPEN, False),
    ("memory limit", OPEN, True),
    ("gc heap out of memory", EXIT, False),
], ids=["interrupt-exit", "interrupt-open", "fuel", "memory-at-start", "gc-heap"])
@pytest.mark.parametrize(("backend", "isolate"), [
    ("capi", "none"), ("capi", "process"), ("wasmtime", "none"), ("wasmtime", "process"),
])
def test_a_name_in_the_backtrace_is_not_a_verdict(
        name: str, body: str, at_start: bool, backend: str, isolate: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    source = tmp_path / "forge.wat"
    source.write_text(forging(name, body, at_start))
    # A fuel budget runs a start function under the same verdict on every path.
    ran = stockade("run", "--json", "--fuel", "1e9", "--isolate", isolate, str(source))
    result = json.loads(ran.stdout)
    # The guest's own exit, whatever its code; a failed call a trap.
    expected = (200, "exited") if body == EXIT else (134, "trap")
    assert (ran.returncode, result["outcome"]) == expected, result["message"]
    assert name not in result["message"]

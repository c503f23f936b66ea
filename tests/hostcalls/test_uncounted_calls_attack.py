"""Attack: path_filestat_get (a 4,000-byte path of `d/..` walked in the host on every
call), path_readlink, path_filestat_set_times and fd_filestat_set_times were not owned,
so not counted: a guest under a budget of 10 host calls made 20,000 of each. They are
now counted against the host-call budget like the other calls that cost the host, and
answered by wasmtime as before, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox

_DEEP = b"d/../" * 799 + b"d"
# name -> (WASI signature, the call in WAT) on preopen 3, the path at 4096.
_CALLS = {
    "path_filestat_get": ("(param i32 i32 i32 i32 i32)",
                          f"(i32.const 3) (i32.const 1) (i32.const 4096) "
                          f"(i32.const {len(_DEEP)}) (i32.const 2048)"),
    "path_readlink": ("(param i32 i32 i32 i32 i32 i32)",
                      "(i32.const 3) (i32.const 4096) (i32.const 1) (i32.const 2048) "
                      "(i32.const 64) (i32.const 2040)"),
    "path_filestat_set_times": ("(param i32 i32 i32 i32 i64 i64 i32)",
                                "(i32.const 3) (i32.const 1) (i32.const 4096) (i32.const 1) "
                                "(i64.const 1) (i64.const 1) (i32.const 5)"),
    "fd_filestat_set_times": ("(param i32 i64 i64 i32)",
                              "(i32.const 3) (i64.const 1) (i64.const 1) (i32.const 5)"),
}


def _guest(name: str, times: int) -> str:
    """`name` called `times` times, then its last errno (one byte) on stdout."""
    signature, call = _CALLS[name]
    data = "".join(f"\\{byte:02x}" for byte in _DEEP)
    return f"""(module
  (import "wasi_snapshot_preview1" "{name}" (func $call {signature} (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "{data}")
  (func (export "_start") (local $i i32)
    (loop $l
      (i32.store8 (i32.const 500) (call $call {call}))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {times}))))
    (i32.store (i32.const 3000) (i32.const 500)) (i32.store (i32.const 3004) (i32.const 1))
    (drop (call $w (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))))
"""


def _run(tmp_path: Path, backend: str, name: str, budget: int | None, times: int) -> Result:
    module = tmp_path / f"{name}.wat"
    module.write_text(_guest(name, times))
    where = tmp_path / "out"
    where.mkdir(exist_ok=True)
    (where / "d").mkdir(exist_ok=True)
    policy = Policy.from_profile("default").with_limits(max_hostcalls=budget).with_capabilities(
        dirs=(DirGrant(where, "/out", writable=True),))
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        return sandbox.run(module, Invocation())


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
@pytest.mark.parametrize("name", sorted(_CALLS))
def test_costly_path_calls_meet_the_host_call_budget(tmp_path: Path, backend: str,
                                                     name: str) -> None:
    result = _run(tmp_path, backend, name, 10, 20_000)
    assert result.outcome is Outcome.HOSTCALL_LIMIT, (result.outcome, result.message)
    assert result.usage.hostcalls[name] == 11


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_counted_calls_answer_alike_on_both_backends(tmp_path: Path, name: str) -> None:
    results = {}
    for backend in ("wasmtime", "capi"):
        (tmp_path / backend).mkdir()
        results[backend] = _run(tmp_path / backend, backend, name, None, 200)
    sandbox, fast = results["wasmtime"], results["capi"]
    assert sandbox.outcome is fast.outcome is Outcome.EXITED, (sandbox.message, fast.message)
    # path_readlink of a directory: EINVAL; the others succeed.
    assert sandbox.stdout == fast.stdout == bytes([28 if name == "path_readlink" else 0])
    assert sandbox.usage.hostcalls[name] == fast.usage.hostcalls[name] == 200

"""Path calls Stockade does not own still refuse a path past PATH_MAX before wasmtime
copies it: `path_filestat_get`, `path_readlink` and `path_filestat_set_times` with a
path of 48 MiB in a granted directory made the host hold two to three copies of it
(360 MiB for a 120 MiB path, found by review) before answering ENAMETOOLONG.

Each run is in a fresh Python process, which reports the errno the guest got and how
much its peak RSS (VmHWM, reset before the run) grew beyond the guest's own memory, on both
in-process backends (the C API's metered run is also the gateway's for a function
granted a directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MiB = 1024**2
PATH_BYTES = 48 * MiB
ERRNO_NAMETOOLONG = 37

# The call, its import's parameters, and its arguments: preopen 3, the path at 65536.
_CALLS = {
    "path_filestat_get": ("i32 i32 i32 i32 i32",
                          "(i32.const 3) (i32.const 0) (i32.const 65536) (local.get $n) "
                          "(i32.const 1024)"),
    "path_readlink": ("i32 i32 i32 i32 i32 i32",
                      "(i32.const 3) (i32.const 65536) (local.get $n) (i32.const 1024) "
                      "(i32.const 256) (i32.const 2000)"),
    "path_filestat_set_times": ("i32 i32 i32 i32 i64 i64 i32",
                                "(i32.const 3) (i32.const 0) (i32.const 65536) "
                                "(local.get $n) (i64.const 0) (i64.const 0) (i32.const 0)"),
}


def _module(call: str) -> str:
    """A guest that fills PATH_BYTES of memory with "./" and passes it to `call` on the
    first preopen, then prints the errno."""
    params, arguments = _CALLS[call]
    pages = (PATH_BYTES + 2 * 65536) // 65536
    return f"""(module
  (import "wasi_snapshot_preview1" "{call}" (func $call (param {params}) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (func (export "_start") (local $i i32) (local $n i32) (local $errno i32)
    (local.set $n (i32.const {PATH_BYTES}))
    (block $done (loop $fill
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store16 (i32.add (i32.const 65536) (local.get $i)) (i32.const 0x2f2e))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $fill)))
    (local.set $errno (call $call {arguments}))
    ;; the errno as two digits at 0, an iovec at 16
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (i32.div_u (local.get $errno)
                                                                   (i32.const 10))))
    (i32.store8 (i32.const 1) (i32.add (i32.const 48) (i32.rem_u (local.get $errno)
                                                                   (i32.const 10))))
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 2))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))))
"""


_PROBE = r"""
import json, sys
from pathlib import Path
from stockade import Invocation, Policy
from stockade.isolate.factory import make_sandbox
from stockade.policy import DirGrant

module, directory = sys.argv[1], sys.argv[2]
policy = Policy.from_profile("default").with_limits(max_memory="64MiB", timeout="20s") \
    .with_capabilities(dirs=(DirGrant(Path(directory), "/d", writable=True),))
sandbox = make_sandbox(policy, "none")
sandbox.run(module)  # compiled, linkers and trampolines built

def hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

Path("/proc/self/clear_refs").write_text("5")  # the peak so far is forgotten
before = hwm()
result = sandbox.run(module)
print(json.dumps({"outcome": result.outcome.value, "message": result.message,
                  "stdout": result.stdout.decode(errors="replace"),
                  "growth": hwm() - before}))
"""


@pytest.mark.parametrize("backend", ["capi", "wasmtime"])
@pytest.mark.parametrize("call", sorted(_CALLS))
def test_a_path_past_path_max_is_refused_before_it_is_copied(
        tmp_path: Path, call: str, backend: str) -> None:
    module = tmp_path / f"{call}.wat"
    module.write_text(_module(call))
    directory = tmp_path / "d"
    directory.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(module), str(directory)],
        capture_output=True, timeout=180, check=False,
        env={**os.environ, "STOCKADE_BACKEND": backend})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    assert report["outcome"] == "exited", report["message"]
    assert report["stdout"] == str(ERRNO_NAMETOOLONG), report
    # The guest's own pages of the path, plus room for a noisy allocator: one more
    # copy of the path (48 MiB) is already too much.
    extra = report["growth"] - PATH_BYTES
    assert extra < 16 * MiB, f"the host grew {extra / MiB:.0f} MiB beyond the guest's memory"

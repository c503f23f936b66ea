"""Attack: fd_write / fd_pwrite on a descriptor that is not open (99, or stdout after
fd_close) or on a directory were charged to the disk quota before wasmtime refused
them: under strict (a quota of 0 B) the run ended as `disk_quota` where the guest should
get EBADF and go on. Nothing of such a write reaches the disk, so nothing is charged:
the guest gets wasmtime's errno on both backends, with or without a directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox

EBADF = 8

# Errnos stored one byte each at 500.. then written to stderr (stdout is closed by then):
# write(99), pwrite(99), write(3) (a directory, or nothing), pwrite(3), close(1), write(1).
_GUEST = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite"
    (func $pw (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "hello")
  (func (export "_start")
    (i32.store (i32.const 3000) (i32.const 1000)) (i32.store (i32.const 3004) (i32.const 5))
    (i32.store8 (i32.const 500)
      (call $w (i32.const 99) (i32.const 3000) (i32.const 1) (i32.const 3008)))
    (i32.store8 (i32.const 501)
      (call $pw (i32.const 99) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 3008)))
    (i32.store8 (i32.const 502)
      (call $w (i32.const 3) (i32.const 3000) (i32.const 1) (i32.const 3008)))
    (i32.store8 (i32.const 503)
      (call $pw (i32.const 3) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 3008)))
    (i32.store8 (i32.const 504) (call $close (i32.const 1)))
    (i32.store8 (i32.const 505)
      (call $w (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))
    (i32.store (i32.const 3000) (i32.const 500)) (i32.store (i32.const 3004) (i32.const 6))
    (drop (call $w (i32.const 2) (i32.const 3000) (i32.const 1) (i32.const 3008)))))
"""


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
@pytest.mark.parametrize("profile, granted", [("strict", False), ("strict", True),
                                              ("default", True)])
def test_a_write_to_no_open_file_is_ebadf_not_disk_quota(tmp_path: Path, backend: str,
                                                         profile: str, granted: bool) -> None:
    module = tmp_path / "badfd.wat"
    module.write_text(_GUEST)
    where = tmp_path / "d"
    where.mkdir()
    policy = Policy.from_profile(profile).with_limits(disk_quota=0)
    if granted:
        policy = policy.with_capabilities(dirs=(DirGrant(where, "/d", writable=True),))
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        result = sandbox.run(module, Invocation())
    assert result.outcome is Outcome.EXITED, (result.outcome, result.message)
    errnos = list(result.stderr)
    assert errnos[:2] == [EBADF, EBADF] and errnos[4:] == [0, EBADF], errnos
    # The preopen is a directory: no file to write (without one, descriptor 3 is not open).
    assert errnos[2] != 0 and errnos[3] != 0, errnos
    assert result.usage.bytes_written == 0 and list(where.iterdir()) == []


# path_open(3, "x", creat|trunc, write rights) -> fd 4; fd_renumber(1, 4): fd 4 is now
# stdout and the file is closed; then 4 KiB written to fd 4.
_STDOUT_MOVED = """(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "x")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 1000) (i32.const 1)
                      (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff)
                      (i32.const 0) (i32.const 2000)))
    (drop (call $renumber (i32.const 1) (i32.load (i32.const 2000))))
    (i32.store (i32.const 3000) (i32.const 8192)) (i32.store (i32.const 3004) (i32.const 4096))
    (drop (call $w (i32.load (i32.const 2000)) (i32.const 3000) (i32.const 1)
                   (i32.const 3008)))))
"""


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
def test_output_to_a_moved_stdout_is_not_charged_as_a_file(tmp_path: Path,
                                                           backend: str) -> None:
    """Output sent to standard output under another number reaches no file: it was not
    charged before the write, yet counted after it, and the run ended as `disk_quota`
    with the file still empty (found by review)."""
    module = tmp_path / "moved.wat"
    module.write_text(_STDOUT_MOVED)
    where = tmp_path / "d"
    where.mkdir()
    policy = Policy.from_profile("default").with_limits(disk_quota=1000).with_capabilities(
        dirs=(DirGrant(where, "/d", writable=True),))
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        result = sandbox.run(module, Invocation())
    assert result.outcome is Outcome.EXITED, (result.outcome, result.message)
    assert result.usage.bytes_written == 0 and (where / "x").stat().st_size == 0

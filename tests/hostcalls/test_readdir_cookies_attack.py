"""Attack: fd_readdir cookies are the guest's to choose. Arbitrary, negative and huge
cookies, a buffer reaching past memory, and a descriptor that is no directory, on both
backends: every call answers an errno or
entries within the buffer, and the run goes on (no host exception, no hang)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox

_COOKIES = (0, -1, 0x7FFFFFFFFFFFFFFF, -0x8000000000000000, 12345678901, 1, 2, 3,
            0x0123456789ABCDEF, -2)
# (fd, buf, len) per extra call: a buffer past the end of memory, one wrapping around,
# standard output (no directory), a descriptor never opened.
_ODD = ((3, 131072 - 10, 60000), (3, 0xFFFFFFF0, 64), (1, 4096, 64), (77, 4096, 64))
_BUF = 60000


def _guest() -> str:
    calls = []
    for index, cookie in enumerate(_COOKIES):
        calls.append(f"""
      (i32.store8 (i32.const {1024 + index})
        (call $rd (i32.const 3) (i32.const 4096) (i32.const {_BUF}) (i64.const {cookie})
                  (i32.const {2048 + 4 * index})))""")
    for index, (fd, buf, size) in enumerate(_ODD, start=len(_COOKIES)):
        calls.append(f"""
      (i32.store8 (i32.const {1024 + index})
        (call $rd (i32.const {fd}) (i32.const {buf}) (i32.const {size}) (i64.const 0)
                  (i32.const {2048 + 4 * index})))""")
    total = len(_COOKIES) + len(_ODD)
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $rd (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    {''.join(calls)}
    ;; errnos at 1024 (one byte each), sizes used at 2048 (u32 each)
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 32))
    (i32.store (i32.const 8) (i32.const 2048)) (i32.store (i32.const 12) (i32.const {4 * total}))
    ;; one buffer per call (the owned fd_write writes one iovec at a time)
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    (drop (call $w (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
"""


def _decode(stdout: bytes) -> tuple[list[int], list[int]]:
    total = len(_COOKIES) + len(_ODD)
    assert len(stdout) == 32 + 4 * total, stdout
    return list(stdout[:total]), list(struct.unpack(f"<{total}I", stdout[32:]))


@pytest.mark.parametrize("backend", ["wasmtime", "capi"])
def test_hostile_cookies_and_buffers_get_errnos_or_bounded_entries(
        tmp_path: Path, backend: str) -> None:
    listed = tmp_path / "listed"
    listed.mkdir()
    for index in range(200):
        (listed / f"f{index}").touch()
    module = tmp_path / "cookies.wat"
    module.write_text(_guest())
    policy = Policy.from_profile("default").with_limits(timeout=10.0).with_capabilities(
        dirs=(DirGrant(listed, "/d"),))
    sandbox = Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)
    try:
        result = sandbox.run(module, Invocation())
    finally:
        sandbox.close()
    assert result.outcome is Outcome.EXITED, (result.outcome, result.message)
    errnos, used = _decode(result.stdout)
    for index, _ in enumerate(_COOKIES):
        # Success with at most the buffer, or EINVAL for a position the kernel refuses.
        assert errnos[index] in (0, 28), (index, errnos)
        assert used[index] <= _BUF, (index, used)
    # Cookie 0: the whole listing (202 entries with . and ..) fits the buffer.
    assert errnos[0] == 0 and 202 * 24 < used[0] < _BUF, used
    odd = errnos[len(_COOKIES):]
    assert odd[0] == 21 and odd[1] == 21  # EFAULT: the buffer is not all in memory
    assert odd[2] in (8, 54) and odd[3] == 8  # EBADF / ENOTDIR
    assert result.usage.hostcalls["fd_readdir"] == len(_COOKIES) + len(_ODD)

"""A guest's own exit code is an exit, whatever its value, on every backend.

wasmtime's WASI fails `proc_exit` with 126 or more ("exit with invalid exit status
outside of [0..126)"), which read as a trap (134). WASI's exit code is a u32 and
programs use 0-255: the guest's code is `guest_exit_code`, and what a process running
the guest exits with (`exit_code`) is that code, as the contract says ("the guest's own
exit code when it exits"), or 255 for a code a process cannot exit with (past 255, or
negative as C's `exit(-1)`), never 0 for a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from tests.conftest import guest, stockade

from .backends import IN_PROCESS, run_on

EXITS = '''(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const {code})) unreachable))'''

# guest code (as WASI's u32), the process exit code
CODES = [(0, 0), (7, 7), (125, 125), (126, 126), (127, 127), (134, 134), (200, 200),
         (255, 255), (256, 255), (0xFFFFFFFF, 255)]


@pytest.mark.parametrize("backend", IN_PROCESS)
@pytest.mark.parametrize(("code", "process_code"), CODES)
def test_proc_exit_is_an_exit_with_the_guests_code(backend: str, code: int, process_code: int,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "exits.wat"
    module.write_text(EXITS.format(code=code))
    result = run_on(backend, Policy.from_profile("default"), module, Invocation(), tmp_path,
                    monkeypatch)
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (
        Outcome.EXITED, code, process_code), result.message
    assert result.message == f"exited with code {code}"
    assert result.ok is (code == 0)


@pytest.mark.parametrize("backend", IN_PROCESS)
def test_a_c_guest_returning_200_from_main_exits_200(backend: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_on(backend, Policy.from_profile("strict"), guest("exitcode.wasm"),
                    Invocation(args=("200",)), tmp_path, monkeypatch)
    assert (result.outcome, result.guest_exit_code, result.exit_code) == (
        Outcome.EXITED, 200, 200), result.message


def test_an_exit_at_instantiation_is_an_exit(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A start function runs while the module is instantiated (or, with a tripwire, just
    # after): its exit is the guest's too.
    module = tmp_path / "start_exits.wat"
    module.write_text('(module (import "wasi_snapshot_preview1" "proc_exit" '
                      '(func $exit (param i32))) (memory (export "memory") 1) '
                      '(func $s (call $exit (i32.const 130))) (start $s) '
                      '(func (export "_start") unreachable))')
    for backend in IN_PROCESS:
        for fuel in (None, 10**9):  # a tripwire, epochs
            policy = Policy.from_profile("default").with_limits(fuel=fuel)
            result = run_on(backend, policy, module, Invocation(), tmp_path, monkeypatch)
            assert (result.outcome, result.guest_exit_code, result.exit_code) == (
                Outcome.EXITED, 130, 130), (backend, fuel, result.message)
            monkeypatch.undo()


@pytest.mark.parametrize("isolate", ["none", "process"])
@pytest.mark.parametrize("backend", ["capi", "wasmtime"])
def test_stockade_run_exits_with_the_guests_code(backend: str, isolate: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    module = tmp_path / "exits.wat"
    module.write_text(EXITS.format(code=200))
    ran = stockade("run", "--isolate", isolate, str(module))
    assert ran.returncode == 200, ran.stderr
    ran = stockade("run", "--json", "--isolate", isolate, str(module))
    assert ran.returncode == 200, ran.stderr
    result = json.loads(ran.stdout)
    assert (result["outcome"], result["exit_code"], result["guest_exit_code"]) == (
        "exited", 200, 200)

"""A `memory.grow` the memory limit refused is known to the verdict, on every backend.

wasmtime's store limiter refuses a grow past `--max-memory` by returning -1 to the
guest and tells the host nothing; a guest that then fails (malloc returned NULL: exit 1;
an abort: a trap) was judged on its own account unless its memory was already near the
limit: a single allocation far past what was left read as `exited` 1 or a `trap`. Such a
run is `memory_limit` (137). A refused grow alone is no violation: a guest that copes
(exits 0) has exited 0, and a grow its own declared maximum refused, under the limit,
stays the guest's failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.errors import ModuleError
from tests.conftest import guest

from .backends import IN_PROCESS, run_on

MiB = 1024**2

GROWS = '''(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 {maximum})
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then {refused}))))'''

# pages asked, the module's declared maximum, what the guest does when refused, verdict
CASES = {
    "past the limit, then exit 1": (16384, "", "(call $exit (i32.const 1))",
                                    Outcome.MEMORY_LIMIT, 137),
    "past the limit, then a trap": (16384, "", "unreachable", Outcome.MEMORY_LIMIT, 137),
    "past the limit, coped with": (16384, "", "(call $exit (i32.const 0))",
                                   Outcome.EXITED, 0),
    "past its own maximum only": (64, "2", "(call $exit (i32.const 1))", Outcome.EXITED, 1),
    "within the limit": (64, "", "", Outcome.EXITED, 0),
}


@pytest.mark.parametrize("backend", IN_PROCESS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_grow_then_a_failure_is_the_memory_limit(
        case: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages, maximum, refused, outcome, exit_code = CASES[case]
    module = tmp_path / "grows.wat"
    module.write_text(GROWS.format(pages=pages, maximum=maximum, refused=refused))
    for fuel in (None, 10**9):  # a tripwire's engine and an epochs one
        policy = Policy.from_profile("default").with_limits(max_memory=16 * MiB, fuel=fuel)
        result = run_on(backend, policy, module, Invocation(), tmp_path, monkeypatch)
        assert (result.outcome, result.exit_code) == (outcome, exit_code), (fuel,
                                                                           result.message)
        if outcome is Outcome.MEMORY_LIMIT:
            assert result.message == ("memory limit of 16MiB reached: a memory.grow to "
                                      "1.0GiB was refused"), result.message
            assert result.guest_exit_code is None
        monkeypatch.undo()


@pytest.mark.parametrize("backend", IN_PROCESS)
@pytest.mark.parametrize(("args", "outcome", "exit_code"), [
    (("1024",), Outcome.MEMORY_LIMIT, 137),
    (("1024", "graceful"), Outcome.EXITED, 0),
    (("4",), Outcome.EXITED, 0),
])
def test_malloc_of_a_gibibyte_under_16_mib(backend: str, args: tuple[str, ...],
                                           outcome: Outcome, exit_code: int, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_profile("strict")  # 16 MiB
    result = run_on(backend, policy, guest("bigalloc.wasm"), Invocation(args=args), tmp_path,
                    monkeypatch)
    assert (result.outcome, result.exit_code) == (outcome, exit_code), result.message
    if args[-1] == "graceful":
        assert result.stderr == b"malloc(1024 MiB) failed\n"
    assert result.usage.peak_memory_bytes < 16 * MiB


FORGED = {
    # No memory, no grow: an i64 named like the watch's, then a trap.
    "an i64": '''(module (global (export "__stockade_grow_refused") i64 (i64.const 4096))
  (func (export "_start") unreachable))''',
    # An f64 infinity: converting it was a traceback out of a clean run.
    "an f64": '''(module (memory (export "memory") 1)
  (global (export "__stockade_grow_refused") f64 (f64.const inf))
  (func (export "_start")))''',
    "a function": '''(module (func (export "__stockade_grow_refused"))
  (func (export "_start") unreachable))''',
}


@pytest.mark.parametrize("backend", IN_PROCESS)
@pytest.mark.parametrize("case", list(FORGED))
def test_a_module_exporting_the_watchs_name_is_refused(
        case: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host read any export of that name as the watch's: a module forged a
    `memory_limit` for its own trap (breakers count it: three opened its breaker)."""
    module = tmp_path / "forged.wat"
    module.write_text(FORGED[case])
    for fuel in (None, 10**9):
        policy = Policy.from_profile("default").with_limits(fuel=fuel)
        with pytest.raises(ModuleError, match="reserves"):
            run_on(backend, policy, module, Invocation(), tmp_path, monkeypatch)
        monkeypatch.undo()

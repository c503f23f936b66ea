"""Attacks on what the native run (`_native.c`) does in C: it resets a slot's shared
state for each run, builds the guest's standard streams without files, and takes a
plan's fixed part by address. Hostile guests must get the same verdicts, answers and
counts as on the ctypes run and the wasmtime-py sandbox, under the same limits, and a
reused slot must carry nothing from one run into the next."""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from stockade import Invocation, Policy, Result, Sandbox
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine, FastModule, FastResult, _run
from stockade.envblock import NO_ENV
from stockade.errors import UsageError
from stockade.result import Outcome

from ..conftest import guest

MiB = 1024**2
MEMORY = 4 * MiB
# Every sync policy: none of them may turn an answer about a descriptor into another.
SYNC_MODES = ("ignore", "allow", "limit:1")


@pytest.fixture(scope="module")
def engine() -> Iterator[FastEngine]:
    """One slot: every run reuses the state, files and structures of the one before."""
    with FastEngine(EngineConfig(), max_instances=1, max_memory=MEMORY) as fast:
        if _run.NATIVE_RUN is None:
            pytest.skip("the fast path's native library is not built here")
        yield fast


def compiled(engine: FastEngine, name: str) -> FastModule:
    return engine.compile(guest(name).read_bytes(), name)


def ctypes_run(module: FastModule, **kwargs: Any) -> FastResult:
    """The same run through ctypes, one C call at a time (files behind the streams)."""
    native, _run.NATIVE_RUN = _run.NATIVE_RUN, None
    try:
        return module.run(**kwargs)
    finally:
        _run.NATIVE_RUN = native


def sandbox_run(monkeypatch: pytest.MonkeyPatch, name: str, stdin: bytes,
                **limits: Any) -> Result:
    monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    policy = Policy.from_profile("default")
    policy = dataclasses.replace(policy, limits=dataclasses.replace(
        policy.limits, max_memory=MEMORY, **limits))
    with Sandbox(policy) as sandbox:
        return sandbox.run(guest(name), Invocation(stdin=stdin))


def seen(result: FastResult | Result) -> tuple[Any, ...]:
    """What a guest's run shows outside: verdict, exit codes, output, host-call counts."""
    counts = result.hostcalls if isinstance(result, FastResult) else result.usage.hostcalls
    return (result.outcome, result.exit_code, result.guest_exit_code, result.stdout,
            result.stderr, result.stdout_truncated, result.stderr_truncated, counts)


# stdin's first byte picks the ending (guests/write_then_end.wat); each row's limits
# are in `Limits` terms, and `max_hostcalls` 2 stops the guest at its fd_read.
ENDINGS = [
    ("trap mid-run", b"t", {}, Outcome.TRAP),
    ("huge exit code", b"x", {}, Outcome.EXITED),  # C's exit(-1): the guest's own
    ("largest exit code", b"e", {}, Outcome.EXITED),
    ("memory growth refused", b"g", {}, Outcome.MEMORY_LIMIT),
    ("write across the output cap", b"", {"max_output": 10}, Outcome.OUTPUT_LIMIT),
    ("write into a full output cap", b"", {"max_output": 7}, Outcome.OUTPUT_LIMIT),
    ("host-call budget", b"t", {"max_hostcalls": 2}, Outcome.HOSTCALL_LIMIT),
]


@pytest.mark.parametrize(("stdin", "limits", "outcome"), [row[1:] for row in ENDINGS],
                         ids=[row[0] for row in ENDINGS])
def test_a_hostile_ending_gets_the_same_verdict_on_every_backend(
        engine: FastEngine, monkeypatch: pytest.MonkeyPatch, stdin: bytes,
        limits: dict[str, int], outcome: Outcome) -> None:
    module = compiled(engine, "write_then_end.wasm")
    native = module.run(stdin=stdin, timeout_s=10.0, **limits)
    assert native.outcome is outcome, native.message
    assert seen(native) == seen(ctypes_run(module, stdin=stdin, timeout_s=10.0, **limits))
    assert seen(native) == seen(sandbox_run(monkeypatch, "write_then_end.wasm", stdin,
                                            **limits))
    if "max_output" in limits:
        assert len(native.stdout) + len(native.stderr) == limits["max_output"]
    if outcome is Outcome.HOSTCALL_LIMIT:
        assert sum(native.hostcalls.values()) == 3  # the refused call counted once


def test_streams_without_files_answer_as_streams_with_files(
        engine: FastEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """fdstat, filestat, seek, tell, sync, flags, size and pwrite on descriptors 0-2 get
    the answers they get where files back the streams; a closed stdout stays closed."""
    module = compiled(engine, "stdio_probe.wasm")
    native = module.run(timeout_s=10.0)
    assert (native.outcome, native.exit_code) == (Outcome.EXITED, 0), native.message
    assert len(native.stdout) == 184
    assert seen(native) == seen(ctypes_run(module, timeout_s=10.0))
    # The sandbox counts every owned call, the native run only those it serves; every
    # answer (fd_sync and fd_datasync too, under each sync policy) is the same.
    for sync in SYNC_MODES:
        sandbox = sandbox_run(monkeypatch, "stdio_probe.wasm", b"", sync=sync)
        assert (sandbox.outcome, sandbox.exit_code) == (Outcome.EXITED, 0)
        assert native.stdout == sandbox.stdout, sync


def metered_run(engine: FastEngine, module: FastModule, **limits: Any) -> FastResult:
    """The same run on the C API under a `Meter`: the sandbox's handlers, in Python."""
    from stockade.hostcalls import Meter

    policy = Policy.from_profile("default")
    meter = Meter(dataclasses.replace(policy.limits, max_memory=MEMORY, **limits), None, [])
    return engine.run_metered(module, meter)


@pytest.mark.parametrize("budget", [None, 5], ids=["no budget", "stopped at a sync"])
def test_sync_on_descriptors_that_are_no_files_answers_and_counts_alike_everywhere(
        engine: FastEngine, monkeypatch: pytest.MonkeyPatch, budget: int | None) -> None:
    """fd_sync and fd_datasync on the standard streams, a closed one and one never
    opened: EBADF on every path (no stream is a file, whatever the sync policy), each
    call counted and charged to the budget alike (guests/sync_probe.wat)."""
    module = compiled(engine, "sync_probe.wasm")
    limits = {} if budget is None else {"max_hostcalls": budget}
    native = module.run(timeout_s=10.0, **limits)
    if budget is None:
        assert (native.outcome, native.exit_code) == (Outcome.EXITED, 0), native.message
        errnos = [int.from_bytes(native.stdout[4 * k:4 * k + 4], "little") for k in range(7)]
        assert errnos == [8, 8, 8, 8, 0, 8, 8]  # EBADF, but for the fd_close of stdin
        assert native.hostcalls == {"fd_sync": 4, "fd_datasync": 2, "fd_close": 1,
                                    "fd_write": 1}
    else:
        assert native.outcome is Outcome.HOSTCALL_LIMIT, native.message
        assert sum(native.hostcalls.values()) == budget + 1  # the refused call counted
    assert seen(native) == seen(ctypes_run(module, timeout_s=10.0, **limits))
    for sync in SYNC_MODES:
        assert seen(native) == seen(sandbox_run(monkeypatch, "sync_probe.wasm", b"",
                                                sync=sync, **limits)), sync
        assert seen(native) == seen(metered_run(engine, module, sync=sync, **limits)), sync


def test_a_reused_slot_carries_nothing_into_the_next_run(engine: FastEngine) -> None:
    hello = compiled(engine, "hello.wasm")
    fresh = hello.run(["x"], timeout_s=10.0)
    assert fresh.outcome is Outcome.EXITED and fresh.stdout.startswith(b"Hello")
    secret = b"S" * (3 * MiB) + b"\n"
    # Output files are not truncated between runs: only this run's bytes may be read.
    assert hello.run(["x"], stdin=secret, timeout_s=10.0).stdout.endswith(secret)
    assert seen(hello.run(["x"], timeout_s=10.0)) == seen(fresh)
    assert compiled(engine, "exitcode.wasm").run(timeout_s=10.0).stdout == b""
    # A spent budget, a reached cap, a closed stdout and a half-read stdin end with
    # their runs.
    assert hello.run(["x"], max_hostcalls=1).outcome is Outcome.HOSTCALL_LIMIT
    assert hello.run(["x"], max_output=3).outcome is Outcome.OUTPUT_LIMIT
    assert compiled(engine, "stdio_probe.wasm").run().exit_code == 0
    ender = compiled(engine, "write_then_end.wasm")
    assert ender.run(stdin=b"-leftover").outcome is Outcome.EXITED
    assert seen(hello.run(["x"], timeout_s=10.0)) == seen(fresh)
    assert ender.run().stdout == b"before\n"
    assert engine.run(hello, ["x"], max_hostcalls=sum(fresh.hostcalls.values())).outcome \
        is Outcome.EXITED


def test_a_plan_whose_argv_disagrees_with_its_count_is_never_read_past(
        engine: FastEngine) -> None:
    hello = compiled(engine, "hello.wasm")
    plan = engine.plan(hello, ["a", "b"], timeout_s=10.0)
    for block, count in ((b"hello.wasm\0a\0b", 3), (b"hello.wasm\0a\0b\0", 4),
                         (b"hello.wasm\0a\0b\0", 2), (b"\xff\0", 1)):
        bad = plan._replace(argv=block, argc=count)
        with pytest.raises(ValueError):
            engine.run_plan(bad, NO_ENV)
    assert engine.run_plan(plan, NO_ENV).stdout.startswith(b"Hello")


def test_runs_with_other_limits_never_share_a_checked_plan(engine: FastEngine) -> None:
    """`FastEngine.run` keeps the plans it checked: every limit is part of the key, so a
    run never gets another run's cap, budget, memory or argv."""
    hello = compiled(engine, "hello.wasm")
    grow = compiled(engine, "write_then_end.wasm")
    for _ in range(2):
        assert hello.run(["x"], max_output=3).outcome is Outcome.OUTPUT_LIMIT
        assert hello.run(["x"]).outcome is Outcome.EXITED
        assert hello.run(["x"], max_hostcalls=1).outcome is Outcome.HOSTCALL_LIMIT
        assert hello.run(iter(["y"])).stdout.startswith(b"Hello")
        assert b"arg 1: y" in hello.run(iter(["y"])).stdout
        assert grow.run(stdin=b"g", max_memory=MiB).message.startswith("memory limit of 1MiB")
        assert grow.run(stdin=b"g").message.startswith("memory limit of 4MiB")
        assert hello.run(["x"], fuel=1000).outcome is Outcome.FUEL_EXHAUSTED
        assert hello.run(["x"], fuel=10**9).outcome is Outcome.EXITED
        with pytest.raises(UsageError):
            hello.run([["not", "hashable"]])  # type: ignore[list-item]
    assert len(hello._plans) <= 16


def _block_agrees(plan: Any) -> None:
    """Every field the native run reads from a plan's block is the plan's own."""
    native = plan.native
    assert plan.native_at == ctypes.addressof(native)
    assert native.pre == plan.module._pre
    argv_at = ctypes.c_void_p.from_buffer(native, type(native).argv.offset).value
    assert ctypes.string_at(argv_at, native.argv_len) == plan.argv
    assert (native.argc, native.argv_len) == (plan.argc, len(plan.argv))
    assert (native.fuel, bool(native.has_fuel)) == (plan.fuel or 0, plan.fuel is not None)
    assert native.max_memory == plan.max_memory
    assert native.max_output == (-1 if plan.max_output is None else plan.max_output)
    assert native.max_hostcalls == ((1 << 64) - 1 if plan.max_hostcalls is None
                                    else plan.max_hostcalls)
    assert bool(native.capture_stderr) == plan.capture_stderr
    assert bool(native.owned_stdio) == plan.owned_stdio


def test_a_replaced_plan_runs_with_its_own_fields_never_the_old_block(
        engine: FastEngine) -> None:
    """`RunPlan` is a named tuple: `_replace` must not keep the native block of the plan
    it copies (the C run would take the old cap, budget, memory, argv or module)."""
    hello = compiled(engine, "hello.wasm")
    probe = compiled(engine, "stdio_probe.wasm")
    plan = engine.plan(hello, ["x"], timeout_s=10.0, max_output=1 << 16)
    _block_agrees(plan)
    capped = plan._replace(max_output=3)
    _block_agrees(capped)
    assert engine.run_plan(capped, NO_ENV).outcome is Outcome.OUTPUT_LIMIT
    budget = plan._replace(max_hostcalls=1)
    _block_agrees(budget)
    assert engine.run_plan(budget, NO_ENV).outcome is Outcome.HOSTCALL_LIMIT
    other = plan._replace(module=probe)
    _block_agrees(other)
    assert not engine.run_plan(other, NO_ENV).stdout.startswith(b"Hello")
    argv = b"hello.wasm\0y\0"
    moved = plan._replace(argv=argv, argc=2)
    _block_agrees(moved)
    assert b"arg 1: y" in engine.run_plan(moved, NO_ENV).stdout
    for changes in ({"native": plan.native}, {"native_at": plan.native_at}):
        with pytest.raises(TypeError):
            plan._replace(**changes)
    assert engine.run_plan(plan, NO_ENV).stdout.startswith(b"Hello")


def test_a_replaced_plan_keeps_its_engines_deadline_and_streams() -> None:
    """A plan's `tripwire` and `owned_stdio` are its engine's: a copy flipping them would
    run a tripwire engine's guest with an epoch deadline no epoch ever reaches (no
    deadline at all), or the streams through host calls the engine does not serve."""
    config = EngineConfig(fuel=False, epochs=False, tripwire=True)
    with FastEngine(config, max_instances=1, max_memory=MEMORY) as fast:
        spin = compiled(fast, "spin.wasm")
        plan = fast.plan(spin, timeout_s=0.2)
        for changes in ({"tripwire": False}, {"owned_stdio": not plan.owned_stdio}):
            with pytest.raises(UsageError, match="another engine"):
                fast.run_plan(plan._replace(**changes), NO_ENV)
        assert fast.run_plan(plan, NO_ENV).outcome is Outcome.TIMEOUT


def records(*writes: tuple[int, int]) -> bytes:
    """stdin for guests/write_sizes.wat: one fd_write of `size` bytes to `fd` each."""
    return b"".join(bytes([fd]) + size.to_bytes(4, "little") for fd, size in writes)


def pattern(size: int) -> bytes:
    """The bytes write_sizes.wat writes to a stream, `size` of them in all."""
    return bytes(k % 251 for k in range(size))


# Writes around the bytes a stream keeps in memory before its file takes it all
# (`RunState`, INLINE_OUTPUT = 8 KiB), each under these output caps.
WRITES = [
    ("up to the last byte kept, then past it", [(1, 8191), (1, 1), (1, 1)]),
    ("one write across the edge", [(1, 8000), (1, 500)]),
    ("a first write larger than what is kept", [(1, 65536), (1, 7)]),
    ("each stream on its own side", [(1, 100), (2, 9000), (1, 8000), (2, 3), (1, 200)]),
    ("empty writes at the edge", [(1, 8192), (1, 0), (2, 0), (1, 1)]),
    ("many small writes", [(1, 700)] * 30 + [(2, 700)] * 13),
]
CAPS = [None, 8192, 8193, 20_000]


@pytest.mark.parametrize("cap", CAPS, ids=lambda cap: f"cap {cap}")
@pytest.mark.parametrize("writes", [row[1] for row in WRITES], ids=[row[0] for row in WRITES])
def test_output_kept_in_memory_then_in_files_reads_back_whole(
        engine: FastEngine, monkeypatch: pytest.MonkeyPatch, writes: list[tuple[int, int]],
        cap: int | None) -> None:
    module = compiled(engine, "write_sizes.wasm")
    stdin = records(*writes)
    native = module.run(stdin=stdin, timeout_s=10.0, max_output=cap)
    sizes = [sum(size for fd, size in writes if fd == stream) for stream in (1, 2)]
    if cap is None or sum(sizes) <= cap:
        assert native.outcome is Outcome.EXITED, native.message
        assert (native.stdout, native.stderr) == (pattern(sizes[0]), pattern(sizes[1]))
    else:
        assert len(native.stdout) + len(native.stderr) == cap
        assert native.stdout == pattern(len(native.stdout))
        assert native.stderr == pattern(len(native.stderr))
        # The write that crossed the cap stopped the guest, its stream marked cut: the
        # rest of it was not lost without a word (nor another stream blamed).
        total, crossing = 0, 0
        for fd, size in writes:
            total += size
            if total > cap:
                crossing = fd
                break
        assert native.outcome is Outcome.OUTPUT_LIMIT
        assert (native.stdout_truncated, native.stderr_truncated) == (crossing == 1,
                                                                      crossing == 2)
    assert seen(native) == seen(ctypes_run(module, stdin=stdin, timeout_s=10.0,
                                           max_output=cap))
    # The profile's cap is far above these outputs.
    limits = {} if cap is None else {"max_output": cap}
    assert seen(native) == seen(sandbox_run(monkeypatch, "write_sizes.wasm", stdin, **limits))


def test_a_stream_kept_in_memory_never_shows_what_an_earlier_run_left_in_its_file(
        engine: FastEngine) -> None:
    module = compiled(engine, "write_sizes.wasm")
    # 896 KiB: less than a slot gives back after a run, so its file keeps them.
    assert len(module.run(stdin=records(*[(1, 65536)] * 14)).stdout) == 14 * 65536
    for writes in ([(1, 10)], [(1, 8193)], [(2, 5), (1, 3)], [(1, 9000), (2, 9000)]):
        result = module.run(stdin=records(*writes), timeout_s=10.0)
        sizes = [sum(size for fd, size in writes if fd == stream) for stream in (1, 2)]
        assert (result.stdout, result.stderr) == (pattern(sizes[0]), pattern(sizes[1]))


def test_the_ticker_never_seals_the_files_of_streams_that_keep_the_cap_themselves(
        engine: FastEngine) -> None:
    """The owned streams stop at the cap as they write; their files may hold an
    earlier run's bytes, past a later run's cap: sealing them would cut that run's
    output short."""
    module = compiled(engine, "write_sizes.wasm")
    module.run(stdin=records(*[(1, 65536)] * 14))
    slot = engine._free[-1]
    assert sum(slot.sizes()) > 1024
    slot.plan = engine.plan(module, (), max_output=1024)
    assert slot.plan.owned_stdio
    slot.cap = 1024
    try:
        slot.seal_if_over()
        assert not slot.sealed
    finally:
        slot.cap = slot.plan = None

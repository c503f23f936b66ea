"""Both engines give the same verdict for the same guest: one trap table, one wasmtime
message parser, one memory-limit rule, one tick formula (a second copy would drift)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stockade.engine import EngineConfig, traps
from stockade.engine.fastpath import FastEngine, _run
from stockade.invocation import Invocation
from stockade.policy import Policy
from stockade.result import Outcome
from stockade.sandbox import Sandbox

from ..conftest import guest

MiB = 1024**2

# guest, arguments, limits over the default profile's, the outcome both must report.
CASES: dict[str, tuple[str, tuple[str, ...], dict[str, Any], Outcome]] = {
    "unreachable": ("trap.wasm", (), {}, Outcome.TRAP),
    "out of bounds": ("oob.wasm", (), {}, Outcome.TRAP),
    "division by zero": ("divzero.wasm", (), {}, Outcome.TRAP),
    "stack overflow": ("recurse.wasm", (), {}, Outcome.TRAP),
    "memory limit (growth)": ("memhog.wasm", (), {"max_memory": 16 * MiB}, Outcome.MEMORY_LIMIT),
    "memory limit (declared)": ("bigmem.wasm", (), {"max_memory": 16 * MiB},
                                Outcome.MEMORY_LIMIT),
    "fuel": ("spin.wasm", (), {"fuel": 1_000_000}, Outcome.FUEL_EXHAUSTED),
    "timeout": ("spin.wasm", (), {"fuel": None, "timeout": 0.3}, Outcome.TIMEOUT),
    "exit code": ("exitcode.wasm", ("7",), {}, Outcome.EXITED),
    "exit code past 125": ("exitcode.wasm", ("200",), {}, Outcome.EXITED),
    "memory limit (one allocation)": ("bigalloc.wasm", ("1024",), {"max_memory": 16 * MiB},
                                      Outcome.MEMORY_LIMIT),
}


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[EngineConfig, FastEngine]]:
    made: dict[EngineConfig, FastEngine] = {}
    yield made
    for engine in made.values():
        engine.close()


@pytest.mark.parametrize("native", [True, False], ids=["native", "ctypes"])
@pytest.mark.parametrize("case", list(CASES))
def test_both_engines_give_one_verdict(case: str, native: bool,
                                       engines: dict[EngineConfig, FastEngine],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    name, args, overrides, expected = CASES[case]
    if not native:
        monkeypatch.setattr(_run, "NATIVE_RUN", None)
    policy = Policy.from_profile("default").with_limits(**overrides)
    limits = policy.limits
    with Sandbox(policy) as sandbox:
        standard = sandbox.run(guest(name), Invocation(args=args))
    config = EngineConfig.for_limits(limits)
    engine = engines.get(config)
    if engine is None:
        engine = engines[config] = FastEngine(config, max_instances=2, max_memory=128 * MiB)
    module = engine.compile(guest(name).read_bytes(), name)
    fast = module.run(args, fuel=limits.fuel, timeout_s=limits.timeout,
                      max_memory=limits.max_memory, max_output=limits.max_output)
    assert standard.outcome is expected, standard.message
    assert (fast.outcome, fast.message, fast.exit_code, fast.guest_exit_code) == (
        standard.outcome, standard.message, standard.exit_code, standard.guest_exit_code)


def test_the_verdict_lives_in_one_module() -> None:
    # The fast path keeps no trap table or message parser of its own.
    for twin in ("_TRAP_OUTCOMES", "_first_line", "_ending"):
        assert not hasattr(_run, twin), f"fastpath/_run.py has its own {twin} again"
    assert traps.ending_of_trap(traps.TRAP_OUT_OF_FUEL, "").outcome is Outcome.FUEL_EXHAUSTED
    assert traps.ending_of_trap(traps.TRAP_INTERRUPT, "").outcome is Outcome.TIMEOUT


def test_one_ticker_serves_both_engines() -> None:
    # The fast path has no epoch thread or tick formula of its own.
    from stockade.engine.fastpath import _engine
    from stockade.engine.ticker import EpochTicker

    assert not hasattr(_engine.FastEngine, "_tick_loop")
    assert not hasattr(_engine.FastEngine, "_deadline")
    with FastEngine(EngineConfig(fuel=False), max_instances=1) as engine:
        assert isinstance(engine._ticker, EpochTicker)


@pytest.mark.parametrize("config", [
    EngineConfig(), EngineConfig(fuel=False), EngineConfig(fuel=False, epochs=False),
    EngineConfig(max_stack=512 * 1024), EngineConfig(fuel=False, strategy="pulley"),
], ids=["fuel+epochs", "epochs", "bare", "stack", "pulley"])
def test_one_configuration_table_feeds_both_engines(config: EngineConfig) -> None:
    import wasmtime

    wasm = guest("hello.wasm").read_bytes()
    standard = wasmtime.Module(wasmtime.Engine(config.to_wasmtime()), wasm).serialize()
    with FastEngine(config, max_instances=1) as engine:
        # wasmtime refuses code compiled under other settings: the two must agree.
        module = engine.deserialize(bytes(standard), "hello.cwasm")
        assert module.run(["x"]).stdout.startswith(b"Hello")
        assert engine.deserialize(module.serialize(), "again.cwasm").run().outcome \
            is Outcome.EXITED


def test_a_host_error_is_classified_without_importing_wasmtime_py() -> None:
    """A confined C-API worker cannot import wasmtime-py: classifying a host call's own
    exception imported it, and the worker reported "No module named 'platform'" instead
    of the error (found by review, a guest's poll timeout of 2**64-1 ns)."""
    import subprocess
    import sys

    code = ("import sys\nfrom stockade.engine.traps import classify\n"
            "ending = classify(OverflowError('timestamp out of range'))\n"
            "assert 'wasmtime' not in sys.modules\nprint(ending.outcome.value, ending.message)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "error OverflowError: timestamp out of range"


def test_a_host_error_wrapped_in_backtraces_is_told_by_its_causes() -> None:
    """A WASI call that fails through the metered path's trampoline comes wrapped in the
    guest's backtrace twice: the message was the second wrapper's first line ("error
    while executing at wasm backtrace:"), not why the call failed."""
    message = ("error while executing at wasm backtrace:\n    0:     0x88 - <unknown>!<wasm "
               "function 1>\n\nCaused by:\n    error while executing at wasm backtrace:\n    "
               "0:    0x6fc - <unknown>!<wasm function 46>\n\nCaused by:\n    0: failed to "
               "call `get-random-bytes`\n    1: requested len 190000000 exceeds limit "
               "67108864\n\n")
    assert traps.root_cause(message) == ("failed to call `get-random-bytes`: requested len "
                                         "190000000 exceeds limit 67108864")
    assert traps.root_cause("error while executing\n\nCaused by:\n    wasm trap: integer "
                            "divide by zero\n") == "integer divide by zero"


def test_a_refusal_at_instantiation_names_its_real_cause() -> None:
    """Two memories where one is allowed were called "declared memory exceeds the memory
    limit" (wasmtime's "memory count too high" holds both words), and a host that could
    not map the guest's memory (an address-space limit) blamed the guest with a trap."""
    from stockade.engine.traps import ending_of_error

    count = ending_of_error("resource limit exceeded: memory count too high at 2", None,
                            started=False, max_memory=128 * 1024**2)
    assert count.outcome is Outcome.TRAP and "memory count too high" in count.message
    size = ending_of_error("memory minimum size of 2 pages exceeds memory limits", None,
                           started=False, max_memory=65536)
    assert size.outcome is Outcome.MEMORY_LIMIT
    host = ending_of_error("failed to allocate memory: Cannot allocate memory (os error 12)",
                           None, started=False, max_memory=128 * 1024**2)
    assert host.outcome is Outcome.ERROR and "ulimit -v" in host.message


@pytest.mark.parametrize(("peak", "limit", "judged"), [
    (64 * 1024, 1024**2, False),  # a 1 MiB limit: a guest far below it failed on its own
    (960 * 1024, 1024**2, True),  # within a quarter of it
    (15 * 1024**2 + 512 * 1024, 16 * 1024**2, True),  # within 1 MiB of a larger one
    (8 * 1024**2, 16 * 1024**2, False),
    (65536, 100_000, True),  # one page is all a 100,000-byte limit lets memory reach
])
def test_a_failure_is_the_memory_limit_only_near_it(peak: int, limit: int,
                                                    judged: bool) -> None:
    for ending in (traps.Ending(Outcome.EXITED, "exited with code 42", 42),
                   traps.Ending(Outcome.TRAP, "wasm trap: unreachable")):
        verdict = traps.memory_verdict(ending, peak, limit)
        assert (verdict.outcome is Outcome.MEMORY_LIMIT) is judged, (ending, verdict)

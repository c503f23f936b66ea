"""Attack: guests that only a deadline stops, on every path that keeps one.

A bare `(loop br 0)`, a recursion loop, a loop growing memory, a guest that filled
stdout past a pipe's size and one that wrote a few bytes, each spinning without a host
call, under a short timeout: in this process (epochs), in an isolated worker with
epochs, and in an isolated worker whose engine has no epoch checks (the worker's
watchdog ends the process at the deadline, `IsolationConfig.process_deadline`). Every
path must stop the guest within the timeout plus generous slack, with the same verdict,
exit code, message and output, and leave no worker or zombie behind; under an RLIMIT_CPU
below the timeout the kernel ends the worker alike with or without epochs; and `stockade
run` blocked on a full stdout pipe must not leave the guest spinning meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.engine.cache import AotCache
from stockade.engine.config import EngineConfig
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.plan import ISOLATED_SCOPE
from stockade.paths import cache_dir
from stockade.policy import DirGrant
from stockade.result import Result
from stockade.sandbox.capi import CapiSandbox
from tests.conftest import guest
from tests.isolate.conftest import gone

HOSTILE = ("spin_loop.wasm", "recurse_loop.wasm", "grow_loop.wasm", "output_spin.wasm",
           "chatter_spin.wasm")
TIMEOUT = 0.5
# Containment bound: far below the parent's kill (timeout + grace, 30 s here), so only
# the path under test can have stopped the guest in time.
SLACK = 10.0
GRACE = 30.0
PATHS = ("in-process", "worker-epochs", "worker-process-deadline")


def _policy() -> Policy:
    return Policy.from_profile("default").with_limits(timeout=TIMEOUT, max_memory="8MiB")


def _run(path: str, module: Path) -> tuple[Result, float, list[int]]:
    """Run `module` on `path`: the result, the seconds it took, the worker pids seen."""
    if path == "in-process":
        with CapiSandbox(_policy()) as sandbox:
            sandbox.run(guest("hello.wasm"))  # the engine exists before the clock starts
            begun = time.monotonic()
            result = sandbox.run(module)
            return result, time.monotonic() - begun, []
    config = IsolationConfig(grace=GRACE, process_deadline=path.endswith("process-deadline"))
    with IsolatedSandbox(_policy(), config=config) as sandbox:
        assert sandbox.run(guest("hello.wasm")).ok
        pids = [sandbox.worker_pid]
        begun = time.monotonic()
        result = sandbox.run(module)
        elapsed = time.monotonic() - begun
        pids.append(sandbox.worker_pid)
        # The worker that ran the guest was stopped and reaped; the next run is served.
        assert sandbox.run(guest("hello.wasm")).ok
        pids.append(sandbox.worker_pid)
    return result, elapsed, [pid for pid in pids if pid is not None]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", HOSTILE)
def test_a_guest_spinning_without_host_calls_stops_at_its_timeout(path: str,
                                                                  name: str) -> None:
    result, elapsed, pids = _run(path, guest(name))
    assert result.outcome is Outcome.TIMEOUT, result.message
    assert result.exit_code == 124
    assert result.message == "wall-clock timeout"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK
    assert result.usage.fuel_consumed is None
    if name == "output_spin.wasm":
        # What the guest wrote before the deadline is kept, as with epochs.
        assert result.stdout == b"x" * (1 << 20) and not result.stdout_truncated
        assert result.usage.hostcalls.get("fd_write") == 16
    elif name == "chatter_spin.wasm":
        # Output still kept in memory, not yet in files, is read alike.
        assert (result.stdout, result.stderr) == (b"partial\n", b"err\n")
        assert not result.stdout_truncated and not result.stderr_truncated
    else:
        assert result.stdout == b""
    for pid in pids:
        assert gone(pid), f"worker {pid} left behind"


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_the_cli_json_and_exit_code_of_a_timeout_are_those_of_epochs(isolate: str) -> None:
    """`stockade run --json` of a spinning guest: exit 124 and the same JSON shape and
    facts in this process (epochs) and in an isolated worker (its own deadline)."""
    command = [sys.executable, "-m", "stockade", "run", "--isolate", isolate, "--json",
               "--timeout", "500ms", "--max-memory", "8MiB", str(guest("output_spin.wasm"))]
    begun = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert time.monotonic() - begun < TIMEOUT + SLACK + 10  # interpreter start included
    assert done.returncode == 124, done.stderr
    data = json.loads(done.stdout)
    assert data["outcome"] == "timeout" and data["exit_code"] == 124
    assert data["message"] == "wall-clock timeout"
    assert data["stdout"] == "x" * (1 << 20) and data["stdout_truncated"] is False
    assert set(data["usage"]) == {"wall_ms", "cpu_ms", "fuel_consumed", "peak_memory_bytes",
                                  "files_created", "bytes_written", "hostcalls"}
    assert data["usage"]["fuel_consumed"] is None
    assert data["limits"]["timeout_ms"] == 500


def _entry(module: Path, config: EngineConfig) -> Path:
    sha = hashlib.sha256(module.read_bytes()).hexdigest()
    # Isolated workers keep their compiled code in their scope's cache (`isolate.handle`).
    return AotCache(Path(cache_dir())).scope(ISOLATED_SCOPE).path(config.fingerprint(), sha)


@pytest.mark.parametrize("process_deadline", [True, False])
def test_the_worker_compiles_without_epochs_only_when_its_process_keeps_the_deadline(
        process_deadline: bool) -> None:
    # A module no other test compiles, so its cache entries are this test's.
    nonce = time.time_ns()
    module = Path(tempfile.mkdtemp()) / f"spin_{nonce}.wat"
    module.write_text(f'(module (memory (export "memory") 1) (data (i32.const 0) "{nonce}")'
                      ' (func (export "_start") (loop $l (br $l))))')
    limits = _policy().limits
    without = EngineConfig.for_limits(limits, process_deadline=True)
    assert not without.epochs and without.fingerprint() != EngineConfig.for_limits(
        limits).fingerprint()  # the AoT cache keeps the two apart
    config = IsolationConfig(grace=GRACE, process_deadline=process_deadline)
    with IsolatedSandbox(_policy(), config=config) as sandbox:
        result = sandbox.run(module)
    assert result.outcome is Outcome.TIMEOUT and result.message == "wall-clock timeout"
    wasm = module.with_suffix(".wasm")
    import wasmtime  # the entry's key is the binary's digest

    wasm.write_bytes(wasmtime.wat2wasm(module.read_text()))
    assert _entry(wasm, without).exists() is process_deadline
    assert _entry(wasm, EngineConfig.for_limits(limits)).exists() is not process_deadline


def test_a_fuel_budget_keeps_epochs_in_the_worker() -> None:
    policy = Policy.from_profile("strict").with_limits(timeout=TIMEOUT)
    sandbox = IsolatedSandbox(policy, config=IsolationConfig(grace=GRACE))
    with sandbox:
        result = sandbox.run(guest("spin_loop.wasm"))
        # Either limit may end the spin first: strict's fuel lasts about as long as the
        # timeout, and a fast moment spends it first (seen in a fresh-clone run).
        assert result.outcome in (Outcome.TIMEOUT, Outcome.FUEL_EXHAUSTED)
        if result.outcome is Outcome.FUEL_EXHAUSTED:  # counted in the store, to the budget
            assert result.usage.fuel_consumed == policy.limits.fuel
        else:  # the deadline stopped it in its own code: the count is not known
            assert result.usage.fuel_consumed is None
        assert not sandbox._plan.process_deadline  # a fuel budget needs the store


@pytest.mark.parametrize("process_deadline", [True, False])
def test_a_metered_run_keeps_its_output_and_counts(tmp_path: Path,
                                                    process_deadline: bool) -> None:
    # A granted directory puts the run under the meter (host calls in Python).
    policy = _policy().with_capabilities(dirs=(DirGrant(tmp_path, "/data", writable=True),))
    config = IsolationConfig(grace=GRACE, process_deadline=process_deadline)
    with IsolatedSandbox(policy, config=config) as sandbox:
        begun = time.monotonic()
        result = sandbox.run(guest("output_spin.wasm"))
        assert time.monotonic() - begun < TIMEOUT + SLACK
        pid = sandbox.worker_pid
        assert sandbox.run(guest("hello.wasm")).ok
    assert result.outcome is Outcome.TIMEOUT and result.message == "wall-clock timeout"
    assert result.stdout == b"x" * (1 << 20)
    assert result.usage.hostcalls.get("fd_write") == 16
    assert pid is None or gone(pid)


@pytest.mark.parametrize("process_deadline", [True, False])
def test_a_sleeping_guest_reports_its_own_timeout(process_deadline: bool) -> None:
    config = IsolationConfig(grace=GRACE, process_deadline=process_deadline)
    with IsolatedSandbox(_policy(), config=config) as sandbox:
        result = sandbox.run(guest("sleeper.wasm"), Invocation(args=("10",)))
    assert result.outcome is Outcome.TIMEOUT
    assert result.message == "wall-clock timeout (guest was sleeping)"


@pytest.mark.parametrize("process_deadline", [True, False])
@pytest.mark.parametrize("name", HOSTILE[:3])
def test_the_cpu_limit_stops_a_spinning_guest_before_its_timeout(name: str,
                                                                  process_deadline: bool
                                                                  ) -> None:
    # Without a cgroup, `cpu_quota` only sizes RLIMIT_CPU: 0.03 core of a 30 s timeout is a
    # 1 CPU-second run (the kernel's limit, whole seconds), far below the 30 s deadline.
    policy = _policy().with_limits(timeout=30.0)
    config = IsolationConfig(grace=GRACE, cgroup=False, cpu_quota=0.03,
                             process_deadline=process_deadline)
    with IsolatedSandbox(policy, config=config) as sandbox:
        begun = time.monotonic()
        result = sandbox.run(guest(name))
        elapsed = time.monotonic() - begun
        pid = sandbox.worker_pid
        assert sandbox.run(guest("hello.wasm")).ok
    # A limit the guest hit, as the deadline it backs up: breakers and audits count it.
    assert result.outcome is Outcome.TIMEOUT and result.exit_code == 124
    assert "CPU time limit (RLIMIT_CPU, SIGXCPU)" in result.message
    assert elapsed < 30.0  # the CPU limit, not the deadline (at most 3 CPU seconds here)
    assert pid is None or gone(pid)


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live children (utime + stime, clock ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`."""
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct = [int(child) for child in path.read_text().split()]
        except FileNotFoundError:
            continue
        for child in direct:
            found += [child, *_children(child)]
    return found


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_a_full_stdout_pipe_does_not_keep_a_spinning_guest_running(isolate: str) -> None:
    """The guest wrote 1 MiB and spins; `stockade run`'s own stdout is a pipe nobody reads
    yet, so writing the result blocks. The guest must be stopped by then: no CPU is
    spent while the command waits on its pipe, and no worker is left running."""
    command = [sys.executable, "-m", "stockade", "run", "--isolate", isolate, "--timeout",
               "500ms", "--max-memory", "8MiB", str(guest("output_spin.wasm"))]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 60
        # Blocked on the full pipe once its CPU time stops moving after the run.
        before = -1.0
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = _tree_cpu(proc.pid)
            if now == before and proc.poll() is None:
                break
            before = now
        assert proc.poll() is None, "the 1 MiB output should not fit in the pipe"
        time.sleep(1.0)
        assert _tree_cpu(proc.pid) - before < 0.2, "something still spins"
        assert all(gone(child) for child in _children(proc.pid))
        output = proc.stdout.read() if proc.stdout else b""
        assert proc.wait(timeout=60) == 124
    assert output == b"x" * (1 << 20)


@pytest.mark.parametrize("path", PATHS)
def test_a_guest_stopped_at_its_deadline_reports_the_memory_it_grew(path: str) -> None:
    """The guest grows its memory to 65 pages, then spins: every path reports that peak,
    the worker that ends itself included (it reads its own mappings, not the store)."""
    result, _, pids = _run(path, guest("grow_then_spin.wasm"))
    assert result.outcome is Outcome.TIMEOUT and result.message == "wall-clock timeout"
    assert result.usage.peak_memory_bytes == 65 * 64 * 1024
    for pid in pids:
        assert gone(pid), f"worker {pid} left behind"

"""The isolated worker wraps the C-API backend: strict limits hold there, wasmtime-py is
never imported, and what the C API leaves to wasmtime-py reaches a wasmtime-py worker."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, ModuleError, Outcome, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.handle import WorkerProcess
from stockade.isolate.plan import cgroup_limits_for, plan_for
from stockade.policy import DirGrant
from tests.conftest import guest

# Run inside the worker after its runs: wasmtime-py's modules, and every module imported
# since the worker answered `ready` (after confinement: a package in a private directory
# would be out of reach by then, so there must be none).
_PROBE = '''
import sys
ready = sys.modules["__main__"].READY_MODULES
result = {"wasmtime": sorted(m for m in sys.modules if m.split(".")[0] == "wasmtime"),
          "late": sorted(set(sys.modules) - ready - {"stockade_probe"})}
'''


def _serve(worker: WorkerProcess, module: bytes, args: tuple[str, ...] = ()) -> tuple[str, Any]:
    """One run through the worker protocol; the final reply."""
    worker.send(("run", module, Invocation(args=args), {}, os.getcwd()))
    deadline = time.monotonic() + 60
    while True:
        kind, payload = worker.receive(deadline, 1 << 24)
        if kind != "started":
            return kind, payload


@pytest.fixture
def grant(tmp_path: Path) -> Path:
    """A writable directory granted to the worker."""
    path = tmp_path / "granted"
    path.mkdir()
    return path


def test_a_c_api_worker_never_imports_wasmtime_py_nor_anything_late(grant: Path) -> None:
    # Metered (a writable grant, a scratch directory, the strict per-call caps), plain
    # runs, a .wat module and a trap: everything a run needs was loaded before the worker
    # confined itself, and wasmtime-py not at all.
    policy = Policy.from_profile("strict").with_limits(disk_quota=1024**2, max_files=8) \
        .with_capabilities(dirs=(DirGrant(host=grant, guest="/data", writable=True),),
                           scratch="/scratch")
    config = IsolationConfig()
    plan = dataclasses.replace(plan_for(policy, config), probe=_PROBE)
    assert plan.backend == "capi"
    worker = WorkerProcess(plan, cgroup_limits_for(policy, config), sys.executable)
    try:
        worker.wait_ready(config.start_timeout)
        assert worker.ready["backend"] == "capi"
        kind, payload = _serve(worker, guest("hello.wasm").read_bytes(), ("world",))
        assert kind == "result" and payload["outcome"] == "exited", payload
        kind, payload = _serve(worker, guest("trap.wasm").read_bytes())
        assert kind == "result" and payload["outcome"] == "trap", payload
        kind, payload = _serve(worker, b'(module (func (export "_start")))')
        assert kind == "result" and payload["outcome"] == "exited", payload
        kind, payload = _serve(worker, guest("attacks/disk_write.wasm").read_bytes(),
                               ("1024",))
        assert kind == "result" and payload["outcome"] == "disk_quota", payload
        for refused in _REFUSED:  # left to wasmtime-py, or refused here
            kind, payload = _serve(worker, refused)
            assert kind in ("error", "fallback"), (kind, payload)
        worker.send(("probe",))
        kind, found = worker.receive(time.monotonic() + 30, 1 << 20)
    finally:
        worker.close()
    assert kind == "probed" and "error" not in found, found
    assert found == {"wasmtime": [], "late": []}


# A module only Wasm GC allows (its refusal asks whether the GC engine accepts it) and
# one no engine accepts.
_REFUSED = (b'(module (rec (type (func))) (func (export "_start")))',
            b'(module (func (export "_start") (result i32) (i64.const 1)))')


def test_a_wasmtime_py_worker_compiles_and_refuses_with_nothing_late(tmp_path: Path) -> None:
    # Its compiles (nothing cached here) and refusals import nothing once confined: an
    # import left to the first refusal failed in every checkout under /tmp, which the
    # worker's confinement hides (125, not 126).
    policy = Policy.from_profile("strict")
    config = IsolationConfig()
    plan = dataclasses.replace(plan_for(policy, config), probe=_PROBE, backend="wasmtime")
    worker = WorkerProcess(plan, cgroup_limits_for(policy, config), sys.executable)
    try:
        worker.wait_ready(config.start_timeout)
        assert worker.ready["backend"] == "wasmtime"
        kind, payload = _serve(worker, b'(module (func (export "_start")) (memory 1))')
        assert kind == "result" and payload["outcome"] == "exited", payload
        for refused in _REFUSED:
            kind, payload = _serve(worker, refused)
            assert kind == "error", (kind, payload)
        worker.send(("probe",))
        kind, found = worker.receive(time.monotonic() + 30, 1 << 20)
    finally:
        worker.close()
    assert kind == "probed" and "error" not in found, found
    assert found["late"] == [], found


@pytest.fixture(scope="module")
def strict_capi() -> Iterator[IsolatedSandbox]:
    """Strict, with a 2 s timeout so the deadline is reached quickly."""
    with IsolatedSandbox(Policy.from_profile("strict").with_limits(timeout=2.0)) as sandbox:
        yield sandbox


@pytest.mark.parametrize(("module", "args", "outcomes"), [
    ("attacks/cpu_loop.wasm", ("120",), ("fuel_exhausted",)),
    ("attacks/memory_grow.wasm", ("4000",), ("memory_limit",)),
    ("attacks/output_flood.wasm", ("stdout", "1024", "60"), ("output_limit",)),
    ("attacks/entropy_flood.wasm", ("30", "4096"), ("hostcall_limit",)),
    ("attacks/sleep_storm.wasm", ("long", "120"), ("timeout",)),
    ("attacks/table_grow.wasm", (), ("trap", "memory_limit", "exited")),
    ("attacks/stack_recursion.wasm", ("1000000000",), ("trap",)),
])
def test_strict_limits_hold_on_the_c_api_in_the_worker(
        strict_capi: IsolatedSandbox, module: str, args: tuple[str, ...],
        outcomes: tuple[str, ...]) -> None:
    result = strict_capi.run(guest(module), Invocation(args=args))
    assert result.outcome.value in outcomes, (result.outcome, result.message)
    # Served by the C-API worker itself: a run sent on to wasmtime-py leaves a
    # wasmtime-py worker in its place.
    assert strict_capi.worker_backend == "capi"
    assert strict_capi.backend == "capi"


def test_modules_left_to_wasmtime_py_get_its_answers_then_the_c_api_resumes(
        strict_capi: IsolatedSandbox) -> None:
    with pytest.raises(ModuleError, match="not a WebAssembly module"):
        strict_capi.run(b"definitely not wasm")
    assert strict_capi.worker_backend == "wasmtime"
    denied = strict_capi.run(guest("needs_env.wasm"))
    assert denied.outcome is Outcome.DENIED and "env.host_magic" in denied.message
    after = strict_capi.run(guest("hello.wasm"))
    assert after.ok, (after.outcome, after.message)
    assert strict_capi.worker_backend == "capi"


def test_wasmtime_py_serves_what_the_c_api_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        assert sandbox.backend == "wasmtime"
        result = sandbox.run(guest("hello.wasm"))
        assert result.ok and sandbox.worker_backend == "wasmtime"

"""The isolated sandbox answers exactly as the in-process one does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stockade import (
    Invocation,
    ModuleError,
    ModuleNotFound,
    Outcome,
    Policy,
    PolicyError,
    Result,
    Sandbox,
)
from stockade.isolate import IsolatedSandbox
from stockade.observe import RunInfo
from stockade.policy import DirGrant
from tests.conftest import guest


def comparable(result: Result) -> dict[str, Any]:
    """A result without the figures that differ from run to run (times)."""
    data = result.to_dict()
    data["usage"] = {k: v for k, v in data["usage"].items() if k not in ("wall_ms", "cpu_ms")}
    return data


def test_hello_gives_the_same_result_in_both(strict_sandbox: IsolatedSandbox) -> None:
    invocation = Invocation(args=("world",), stdin=b"from stdin\n")
    with Sandbox(Policy.from_profile("strict")) as sandbox:
        local = sandbox.run(guest("hello.wasm"), invocation)
    isolated = strict_sandbox.run(guest("hello.wasm"), invocation)
    assert isolated.ok
    assert comparable(isolated) == comparable(local)
    assert isolated.stdout.endswith(b"arg 1: world\nfrom stdin\n")


def test_module_bytes_and_exit_codes(strict_sandbox: IsolatedSandbox) -> None:
    data = guest("exitcode.wasm").read_bytes()
    with Sandbox(Policy.from_profile("strict")) as sandbox:
        local = sandbox.run(data, Invocation(args=("7",)))
    isolated = strict_sandbox.run(data, Invocation(args=("7",)))
    assert comparable(isolated) == comparable(local)


def test_limits_hold_the_same_way(strict_sandbox: IsolatedSandbox) -> None:
    with Sandbox(Policy.from_profile("strict")) as sandbox:
        local = sandbox.run(guest("trap.wasm"))
    isolated = strict_sandbox.run(guest("trap.wasm"))
    assert isolated.outcome is local.outcome is Outcome.TRAP
    assert isolated.message == local.message


def test_denied_imports_are_a_result(strict_sandbox: IsolatedSandbox) -> None:
    result = strict_sandbox.run(guest("needs_env.wasm"))
    assert result.outcome is Outcome.DENIED
    assert "env.host_magic" in result.message


def test_load_errors_are_raised_with_their_class(strict_sandbox: IsolatedSandbox,
                                                  tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFound):
        strict_sandbox.run(tmp_path / "missing.wasm")
    with pytest.raises(ModuleError, match="not a WebAssembly module"):
        strict_sandbox.run(b"definitely not wasm")
    after = strict_sandbox.run(guest("hello.wasm"))
    assert after.ok, (after.outcome, after.message)


def test_policy_errors_are_raised(tmp_path: Path) -> None:
    grant = DirGrant(host=tmp_path / "absent", guest="/data")
    policy = Policy.from_profile("strict").with_capabilities(dirs=(grant,))
    with IsolatedSandbox(policy) as sandbox, pytest.raises(PolicyError):
        sandbox.run(guest("hello.wasm"))


def test_granted_directories_and_allowed_env(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.txt").write_text("data")
    policy = Policy.from_profile("default").with_capabilities(
        dirs=(DirGrant(host=tmp_path, guest="/data", writable=True),),
        env_allow=("STOCKADE_ISOLATE_PROBE",),
    )
    with IsolatedSandbox(policy) as sandbox:
        sandbox.protections()
        # Set after the worker started: the value of each run is what the parent has then.
        monkeypatch.setenv("STOCKADE_ISOLATE_PROBE", "passed")
        result = sandbox.run(guest("probe.wasm"),
                             Invocation(args=("/data/in.txt", "--write", "/data/out.txt")))
    lines = result.stdout.decode().splitlines()
    assert "env STOCKADE_ISOLATE_PROBE=passed" in lines
    assert "read /data/in.txt ok" in lines and "write /data/out.txt ok" in lines
    assert (tmp_path / "out.txt").read_text() == "x"


class Recorder:
    """Observer recording what it is told."""

    def __init__(self) -> None:
        self.started: list[RunInfo] = []
        self.finished: list[tuple[RunInfo, Result]] = []

    def run_started(self, info: RunInfo) -> None:
        self.started.append(info)

    def run_finished(self, info: RunInfo, result: Result) -> None:
        self.finished.append((info, result))


def test_observers_run_in_the_caller_with_the_worker_pid() -> None:
    recorder = Recorder()
    with IsolatedSandbox(Policy.from_profile("strict"), observers=[recorder]) as sandbox:
        result = sandbox.run(guest("hello.wasm"))
        pid = sandbox.worker_pid
    assert [info.pid for info in recorder.started] == [pid]
    assert pid != os.getpid()
    info, finished = recorder.finished[0]
    assert finished is result and info is recorder.started[0]
    assert info.module == "hello.wasm" and info.sha256 == result.sha256


@pytest.mark.cpython
@pytest.mark.parametrize("isolate", ["none", "process"])
def test_both_sandboxes_run_python_and_run_async(python_wasm: Path, isolate: str) -> None:
    """`make_sandbox(policy, "process")` has the "same interface as Sandbox" (README):
    the isolated one had neither `run_python` nor `run_async`."""
    import asyncio

    from stockade.cpython import python_policy
    from stockade.isolate import make_sandbox

    with make_sandbox(python_policy(), isolate) as sandbox:
        result = sandbox.run_python(  # type: ignore[attr-defined]
            "import helper, sys; print(helper.twice(21), sys.stdin.read(), sys.argv[1:])",
            files={"helper.py": "def twice(x): return 2 * x\n"}, args=["a"], stdin="in")
        assert result.stdout == b"42 in ['a']\n", result.stderr
        ran = asyncio.run(sandbox.run_async(  # type: ignore[attr-defined]
            guest("hello.wasm"), Invocation(args=("async",))))
        assert ran.ok and b"arg 1: async" in ran.stdout

"""Every backend a `Result` can come from, for tests that hold them to one verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Policy, Result, Sandbox
from stockade.engine.fastpath import _run
from stockade.isolate import IsolatedSandbox
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox

# wasmtime-py's sandbox; the C API's native run, its ctypes run and its metered run (a
# granted directory: host calls served in Python under a `Meter`); an isolated worker on
# either engine.
IN_PROCESS = ("wasmtime", "capi", "capi-ctypes", "capi-metered")
ISOLATED = ("isolated-capi", "isolated-wasmtime")


def run_on(backend: str, policy: Policy, module: Path, invocation: Invocation,
           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    """Run `module` once on `backend` (one of `IN_PROCESS` or `ISOLATED`)."""
    if backend == "wasmtime":
        with Sandbox(policy) as sandbox:
            return sandbox.run(module, invocation)
    if backend.startswith("isolated-"):
        monkeypatch.setenv("STOCKADE_BACKEND", backend.removeprefix("isolated-"))
        with IsolatedSandbox(policy) as isolated:
            assert isolated.backend == backend.removeprefix("isolated-")
            return isolated.run(module, invocation)
    if backend == "capi-ctypes":
        monkeypatch.setattr(_run, "NATIVE_RUN", None)
    elif backend == "capi-metered":
        (tmp_path / "granted").mkdir(exist_ok=True)
        policy = policy.with_capabilities(dirs=(DirGrant(tmp_path / "granted", "/data"),))
    with CapiSandbox(policy) as capi:
        result = capi.run(module, invocation)
        assert capi._standard is None, "the C API left the module to wasmtime-py"
        return result

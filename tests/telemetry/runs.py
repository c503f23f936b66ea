"""Runs as data: a `RunInfo` and the `Result` a sandbox would report for it."""

from __future__ import annotations

import os
import time

from stockade.invocation import Invocation
from stockade.observe import RunInfo
from stockade.policy import Policy
from stockade.result import Outcome, Result, Usage

__all__ = ["DIGEST", "make_run"]

DIGEST = "ab" * 32


def make_run(
    outcome: Outcome = Outcome.EXITED,
    *,
    name: str = "hello",
    sha256: str = DIGEST,
    tenant: str | None = None,
    policy: Policy | None = None,
    usage: Usage | None = None,
    message: str = "",
) -> tuple[RunInfo, Result]:
    """A started run and how it ended (exit code from the outcome)."""
    invocation = Invocation(name=name, tenant=tenant)
    info = RunInfo(f"{name}.wasm", sha256, invocation, policy or Policy(), time.time(),
                   os.getpid())
    result = Result(
        module=f"{name}.wasm", sha256=sha256, outcome=outcome, exit_code=outcome.exit_code,
        guest_exit_code=0 if outcome is Outcome.EXITED else None,
        message=message or outcome.value,
        usage=usage or Usage(wall_ms=1.5, cpu_ms=1.2, fuel_consumed=12345,
                             peak_memory_bytes=131072, files_created=1, bytes_written=10),
    )
    return info, result

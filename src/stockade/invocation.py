"""What to run a module with: `Invocation` (plain data)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Invocation"]


@dataclass(frozen=True)
class Invocation:
    """Arguments, standard input and extra environment for one run of a module.

    `args` excludes the program name (the module's file name is used as argv[0]).
    `env` adds variables on top of the policy's; `name` and `tenant` label telemetry,
    breakers and audit records; `traceparent` (W3C) makes the run's span a child of the
    caller's trace.
    """

    args: tuple[str, ...] = ()
    stdin: bytes = b""
    env: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    tenant: str | None = None
    invocation_id: str = field(default_factory=lambda: os.urandom(16).hex())
    traceparent: str | None = None

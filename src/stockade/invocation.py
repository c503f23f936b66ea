"""What to run a module with: `Invocation` (plain data)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

__all__ = ["Invocation", "new_invocation_id"]

# Ids are a random per-process prefix and a counter: unique across processes without a
# getrandom() system call per invocation (the gateway makes thousands a second).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


def new_invocation_id() -> str:
    """A new 32-hex-digit invocation id, unique across processes."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def _reseed_after_fork() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_reseed_after_fork)


@dataclass(frozen=True)
class Invocation:
    """Arguments, standard input and extra environment for one run of a module.

    `args` excludes the program name (the module's file name is used as argv[0]).
    `env` adds variables on top of the policy's; `name` and `tenant` label telemetry,
    breakers and audit records; `traceparent` (W3C) makes the run's span a child of the
    caller's trace; `breaker` names the circuit breaker the run counts toward (the
    gateway: `function:<name>`; None: the module's digest).
    """

    args: tuple[str, ...] = ()
    stdin: bytes = b""
    env: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    tenant: str | None = None
    invocation_id: str = field(default_factory=new_invocation_id)
    traceparent: str | None = None
    breaker: str | None = None

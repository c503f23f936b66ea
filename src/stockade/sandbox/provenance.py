"""The trust gate both sandboxes pass a module through before loading it.

Under `require_signature` the module's bytes are read once, verified, and those same
bytes are what gets loaded (no second read a swapped file could slip into). Precompiled
`.cwasm` files carry no signature and are refused; a `LoadedModule` is accepted only when
this sandbox verified its bytes.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..engine.loader import ModuleFile
from ..invocation import Invocation
from ..observe import RunInfo, RunObserver, notify_finished, notify_started
from ..policy import Policy
from ..records import FrozenRecord, record
from ..result import Outcome, Result

__all__ = ["Gate", "gate", "denied_result"]


@record(frozen=True, init=False, repr=False, eq=False)
class Gate(FrozenRecord):
    """What the trust gate decided: the verified bytes to load, or why not."""

    data: bytes | None
    name: str
    sha256: str
    refusal: str | None = None

    def __init__(self, data: bytes | None, name: str, sha256: str,
                 refusal: str | None = None) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "refusal", refusal)


def _read(module: str | Path, max_size: int) -> tuple[bytes, str]:
    # Opened as every backend opens a module (`ModuleFile`: never blocking on a FIFO, a
    # regular file only, read to the limit): a FIFO held the gate for ever (found by
    # review).
    path = Path(module)
    with ModuleFile(path, max_size) as file:
        return file.read(), path.name


def gate(module: str | Path | bytes, policy: Policy, name: str | None = None) -> Gate | None:
    """None when the policy requires no signature; else the verified bytes or a refusal.
    Raises ModuleNotFound, ModuleError, or KeyFileError for unreadable trusted keys."""
    if not policy.trust.require_signature:
        return None
    from ..trust.enforce import refusal

    if isinstance(module, bytes):
        data, label = module, name or "<bytes>"
    else:
        data, label = _read(module, policy.limits.max_module_size)
    sha = hashlib.sha256(data).hexdigest()
    reason = refusal(data, policy.trust)
    return Gate(None if reason else data, label, sha, reason)


def denied_result(verdict: Gate, policy: Policy, invocation: Invocation,
                  observers: tuple[RunObserver, ...]) -> Result:
    """The `denied` result of a refused module, reported to observers like a run (so the
    audit log records it)."""
    info = RunInfo(module=verdict.name, sha256=verdict.sha256, invocation=invocation,
                   policy=policy, started=time.time(), pid=os.getpid())
    notify_started(observers, info)
    result = Result(module=verdict.name, sha256=verdict.sha256, outcome=Outcome.DENIED,
                    exit_code=Outcome.DENIED.exit_code,
                    message=f"{verdict.name}: signature {verdict.refusal}",
                    limits=policy.limits.as_dict())
    notify_finished(observers, info, result)
    return result

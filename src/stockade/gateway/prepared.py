"""`Prepared`: a function ready to run once per request, whatever runs it.

    Prepared.run(invocation) -> Result           (on a guest thread; never shared state)
    Prepared.try_inline(invocation)              (on the event loop, within a small budget)

Implementations: `SandboxFunction` (executor.py), `FastFunction` and `MeteredFunction`
(fastexec.py), `PooledFunction` (pool.py), and `DeniedFunction` here: a module refused at load.
A leaf: it knows none of them.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..invocation import Invocation
from ..observe import RunInfo, RunObserver, notify_finished, notify_started
from ..result import Outcome, Result
from .manifest import FunctionSpec

if TYPE_CHECKING:
    from .cgi import CgiEnvironment

__all__ = ["Prepared", "DeniedFunction"]


class Prepared(ABC):
    """A function ready to run: `kind` names the executor, `sha256` the module. `cgi`
    is set by executors that take a request's CGI variables as bytes (`HttpInvocation.
    env_block`); the others get them as `Invocation.env`."""

    kind = "none"
    cgi: CgiEnvironment | None = None
    inlines = False  # whether `try_inline` may finish a run (FastFunction)

    def __init__(self, spec: FunctionSpec, sha256: str, observers: Sequence[RunObserver]):
        self.spec = spec
        self.sha256 = sha256
        self.observers = tuple(observers)
        self.warm = False
        self._pid = os.getpid()  # a system call: worker processes are exec'd, never forked
        self.module_name = spec.module.name  # a path's `name` is computed on every read

    @abstractmethod
    def run(self, invocation: Invocation) -> Result:
        """Run once in a fresh instance (called on a guest thread)."""

    def try_inline(self, invocation: Invocation) -> tuple[Result | None, float]:
        """Run on the calling thread if it can be done within a small budget: (result,
        cpu seconds), or (None, cpu seconds spent) to have `run` do it on a guest thread.
        Only executors whose runs leave no trace when abandoned can say yes."""
        return None, 0.0

    def _info(self, invocation: Invocation) -> RunInfo:
        return RunInfo(self.module_name, self.sha256, invocation, self.spec.policy,
                       time.time(), self._pid, coldstart=not self.warm)


class DeniedFunction(Prepared):
    """A module refused at load: every run reports `denied` (and observers record it)."""

    kind = "denied"

    def __init__(self, spec: FunctionSpec, sha256: str, message: str,
                 observers: Sequence[RunObserver]) -> None:
        super().__init__(spec, sha256, observers)
        self.message = message

    def run(self, invocation: Invocation) -> Result:
        """A `denied` result, recorded like a run."""
        info = self._info(invocation)
        notify_started(self.observers, info)
        result = Result(module=self.module_name, sha256=self.sha256,
                        outcome=Outcome.DENIED, exit_code=Outcome.DENIED.exit_code,
                        message=self.message, limits=self.spec.policy.limits.as_dict())
        notify_finished(self.observers, info, result)
        return result

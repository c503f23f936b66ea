"""Hooks for watching runs from outside the sandbox: `RunInfo` and `RunObserver`.

The sandbox calls observers at the start and end of each run; telemetry, the
security monitor and breakers implement them. Observers must never touch the
wasmtime Store (it is not thread-safe) and must not raise: errors are logged.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path

from .records import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .invocation import Invocation
    from .policy import Policy
    from .result import Result
else:
    Protocol = object  # `typing` costs `stockade run` ~2 ms; at run time a plain base

__all__ = ["RunInfo", "RunObserver", "notify_started", "notify_finished"]


def _log_failure(observer: object, stage: str) -> None:
    import logging

    logging.getLogger("stockade.observe").exception("observer %r failed at run %s", observer, stage)


@record(init=False, repr=False, eq=False, slots=True)
class RunInfo(Record):
    """What is known about a run as it starts. `started` is `time.time()`, `pid` the process
    that runs the guest (a worker when isolated), `writable_dirs` the host directories the
    guest may write to. `events` collects (name, attributes) pairs observers add, e.g. warnings."""

    module: str
    sha256: str
    invocation: Invocation
    policy: Policy
    started: float
    pid: int
    writable_dirs: tuple[Path, ...] = ()
    coldstart: bool = False
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def __init__(self, module: str, sha256: str, invocation: Invocation, policy: Policy,
                 started: float, pid: int, writable_dirs: tuple[Path, ...] = (),
                 coldstart: bool = False,
                 events: list[tuple[str, dict[str, object]]] | None = None) -> None:
        self.module = module
        self.sha256 = sha256
        self.invocation = invocation
        self.policy = policy
        self.started = started
        self.pid = pid
        self.writable_dirs = writable_dirs
        self.coldstart = coldstart
        self.events = [] if events is None else events


class RunObserver(Protocol):
    """Receives run start and end. Called on the thread that runs the guest."""

    def run_started(self, info: RunInfo) -> None: ...

    def run_finished(self, info: RunInfo, result: Result) -> None: ...


def notify_started(observers: tuple[RunObserver, ...], info: RunInfo) -> None:
    """Call `run_started` on each observer; an observer's error is logged, never raised."""
    for observer in observers:
        try:
            observer.run_started(info)
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            _log_failure(observer, "start")


def notify_finished(observers: tuple[RunObserver, ...], info: RunInfo, result: Result) -> None:
    """Call `run_finished` on each observer; an observer's error is logged, never raised."""
    for observer in observers:
        try:
            observer.run_finished(info, result)
        except Exception:  # noqa: BLE001
            _log_failure(observer, "end")

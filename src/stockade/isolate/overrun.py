"""`Overrun`: the deadline of a worker whose engine has no epoch checks.

A worker owns its process, so a guest past its deadline can be stopped by ending the
process: its C-API engine is built without epoch interruption
(`EngineConfig.process_deadline`), which spares every loop back-edge and function entry a
deadline check (compute at 1.05x native instead of 1.3x). `Overrun` keeps the deadline
instead. It is armed as the guest starts (`Relay.run_started`) for the policy's timeout.
At the deadline its thread takes the reply lock, asks the backend for the run's result
as an epoch interrupt would have made it (`FastEngine.overdue`: the verdict, the output
so far, host calls, times; the guest's store is not touched), sends it as `overran` and
ends the process with `os._exit`: nothing the guest runs can hold it back (wasm code
runs without the GIL; host calls written in Python hold it for a bounded time). The
memory the guest grew to is read from this process's mappings (`guestmem`), not from
the store. The parent reaps the worker and its spare takes over (`process`). A run that
ends first disarms it under the same lock, so exactly one reply leaves the worker. The
parent's own kill at timeout + grace stays the backstop and needs nothing from this
process.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..engine.ticker import TICK_SECONDS
from .protocol import write_reply

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["Overrun", "LAG"]

# How long after the deadline the process ends: a guest sleeping in `poll_oneoff` wakes at
# the deadline itself and reports its own timeout meanwhile (as the epoch path, which stops
# a guest within two ticks of its deadline).
LAG = 4 * TICK_SECONDS


class Overrun:
    """Ends this process when an armed run passes its deadline (see the module docstring).

    `report(wall_s, cpu_s)` gives the run's result as of now (None: no run in progress
    yet or any more); every reply frame the worker writes while a run may be armed goes
    under `lock`. The thread starts on the first `arm`.
    """

    def __init__(self, write_fd: int, report: Callable[[float, float], Result | None]
                 ) -> None:
        self.write_fd = write_fd
        self.report = report
        self.lock = threading.Lock()
        self._cond = threading.Condition()
        self._due = math.inf
        self._begun = 0.0
        self._cpu_clock = 0
        self._cpu0 = 0.0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        """The guest starts now, on the calling thread, with `seconds` to run."""
        clock = time.pthread_getcpuclockid(threading.get_ident())
        with self._cond:
            self._cpu_clock, self._cpu0 = clock, time.clock_gettime(clock)
            self._begun = time.monotonic()
            self._due = self._begun + seconds + LAG
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stockade-overrun",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        """The run ended by itself. Call with `lock` held, then send its reply."""
        with self._cond:
            self._due = math.inf

    def _loop(self) -> None:
        while True:
            with self._cond:
                wait = self._due - time.monotonic()
                if wait > 0:
                    self._cond.wait(None if wait == math.inf else wait)
                    continue
            with self.lock:
                with self._cond:
                    if self._due > time.monotonic():
                        continue  # disarmed (or armed anew) meanwhile
                    wall = time.monotonic() - self._begun
                    cpu = time.clock_gettime(self._cpu_clock) - self._cpu0
                try:
                    result = self.report(wall, cpu)
                    if result is not None:
                        write_reply(self.write_fd, "overran", result)
                except BaseException as exc:  # noqa: BLE001 - the guest must stop anyway
                    # The parent reports the death (`error`) with this line as its cause.
                    os.write(2, f"deadline passed; no result: {exc!r}\n".encode())
                    os._exit(3)
                if result is None:  # between runs' steps: look again a tick later
                    with self._cond:
                        self._due = time.monotonic() + TICK_SECONDS
                    continue
                os._exit(0)  # the guest's thread cannot be stopped any other way

"""`exchange`: feed a child process its input and collect its output, while watching that
it still runs.

`subprocess.run(input=...)` takes its input as one `bytes`: a caller handing a child a
header and a module built a second copy of the module for as long as the child ran. And
a child that is stopped (SIGSTOP, a debugger) spends no CPU, so its CPU limit never
fires: only the caller's wall deadline, minutes later, ended the wait. Here the input is
written from the caller's own buffers, and a child stopped for `STOPPED_FOR` seconds is
given up at once.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence

__all__ = ["exchange", "ChildStopped", "DeadlinePassed", "STOPPED_FOR"]

STOPPED_FOR = 1.0  # seconds a child may stay stopped (job control resumes it sooner)
_LOOK = 0.1  # seconds between looks at whether the child is stopped
_CHUNK = 1 << 20


class ChildStopped(Exception):
    """The child stayed stopped for `STOPPED_FOR` seconds; `signal` is what stopped it."""

    def __init__(self, stop: int) -> None:
        super().__init__(stop)
        self.signal = stop

    @property
    def signal_name(self) -> str:
        """`SIGSTOP`, `SIGTSTP`, ... or the number when it has no name."""
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


class DeadlinePassed(Exception):
    """The child was still running at its deadline."""


def exchange(process: subprocess.Popen[bytes], chunks: Sequence[bytes | memoryview],
             timeout: float | None,
             extra: Sequence[int] = ()) -> tuple[bytes, bytes, list[bytes]]:
    """Write `chunks` to `process`'s stdin (then close it), read its stdout, stderr and
    the `extra` descriptors (read ends of pipes it writes) to their end, and wait for it
    to exit. Returns what stdout, stderr and each of `extra` gave. Raises
    DeadlinePassed after `timeout` seconds (None: no deadline), ChildStopped when the
    child stays stopped; either way the child is left running for the caller to kill.
    A child that exits without reading all its input is not an error."""
    if process.stdin is None or process.stdout is None or process.stderr is None:
        raise ValueError("exchange needs a process with stdin, stdout and stderr pipes")
    end = None if timeout is None else time.monotonic() + timeout
    pending = deque(memoryview(chunk) for chunk in chunks if len(chunk))
    stdin = process.stdin.fileno()
    readers = (process.stdout.fileno(), process.stderr.fileno(), *extra)
    outputs: dict[int, list[bytes]] = {fd: [] for fd in readers}
    with selectors.DefaultSelector() as selector:
        if pending:
            os.set_blocking(stdin, False)
            selector.register(stdin, selectors.EVENT_WRITE)
        else:
            process.stdin.close()
        for fd in readers:
            selector.register(fd, selectors.EVENT_READ)
        stopped_since: float | None = None
        while selector.get_map() or process.poll() is None:
            now = time.monotonic()
            if end is not None and now >= end:
                raise DeadlinePassed
            stop = _stop_signal(process.pid)
            if stop is None:
                stopped_since = None
            elif stopped_since is None:
                stopped_since = now
            elif now - stopped_since >= STOPPED_FOR:
                raise ChildStopped(stop)
            wait = _LOOK if end is None else max(0.0, min(_LOOK, end - now))
            if not selector.get_map():
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
                continue
            for key, _ in selector.select(wait):
                if key.fd != stdin:
                    data = os.read(key.fd, _CHUNK)
                    if data:
                        outputs[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
                    continue
                try:
                    with pending[0][:_CHUNK] as piece:
                        written = os.write(stdin, piece)
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # it exited, or closed its input: its status says
                    pending.clear()
                else:
                    pending[0] = pending[0][written:]
                    if not pending[0]:
                        pending.popleft()
                if not pending:
                    selector.unregister(stdin)
                    process.stdin.close()
    out, err, *others = (b"".join(outputs[fd]) for fd in readers)
    return out, err, others


def _stop_signal(pid: int) -> int | None:
    """The signal that stopped child `pid`, or None while it runs (or has exited). Asked
    with WNOWAIT: nothing is reaped, `Popen` still collects the exit status."""
    try:
        found = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if found is None or found.si_code not in (os.CLD_STOPPED, os.CLD_TRAPPED):
        return None
    return found.si_status

"""Timing a child process: request to first output byte, to exit, and its rusage.

The process is started through the benchmark's launcher (`rusage`, built from
`guests/bench/rusage.c` with the native guests): Linux carries the high-water mark of the
memory a process had before exec into the ru_maxrss of what it execs, so a child forked
(or vforked) from this ~22 MB Python agent reported the agent's peak RSS (a static
native hello "used" 21.7 MiB, and more after the agent grew). The launcher is a small
static program: it forks, execs the command, reaps it with `wait4` and reports the
child's own rusage (CPU time and peak RSS of the child and of the children it reaped:
crun's container process, a shell's exec), so a process is measured whole, and the
CLOCK_MONOTONIC instants of its fork and its reaping, which time it (the clock of
`time.perf_counter`, which marks its first output byte).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..guestio import fingerprint
from .base import Sample

__all__ = ["ProcessRun", "ChildUsage", "Launched", "LAUNCHER", "default_launcher", "launch",
           "measure_process"]

_CHUNK = 1 << 16
LAUNCHER = "rusage"  # build/native/bench/rusage


@dataclass
class ProcessRun:
    """What one process produced, with its timing `sample`."""

    sample: Sample
    stdout: bytes
    stderr: bytes
    returncode: int


@dataclass(frozen=True)
class ChildUsage:
    """What the launcher reported of the child it ran: its exit code (negative: the
    signal that ended it), peak RSS in KiB, user + system CPU in ms, and the
    `perf_counter` instants (seconds) just before its fork and just after its reaping."""

    returncode: int
    rss_kb: int
    cpu_ms: float
    forked: float
    reaped: float


def default_launcher() -> Path:
    """The launcher of the installed package's, or the checkout's, build directory."""
    from .base import Layout

    return Layout.under().native(LAUNCHER)


class Launched:
    """A command running under the launcher. `proc` is the launcher's Popen (its stdout
    and stderr pipes are the command's); `finish` reaps it and returns the command's
    `ChildUsage`; `kill` ends both (the command dies with the launcher)."""

    def __init__(self, proc: subprocess.Popen[bytes], report: int, program: str) -> None:
        self.proc = proc
        self.report = report
        self.program = program

    def kill(self) -> None:
        """SIGKILL the launcher; its child gets SIGKILL too (PR_SET_PDEATHSIG)."""
        if self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self) -> ChildUsage | None:
        """Reap the launcher and read its report: None when it ended without one (killed,
        or refused to start). Raises OSError when the command could not be executed, as
        Popen would have."""
        if self.proc.returncode is None:
            _, status, _ = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
        try:
            os.set_blocking(self.report, False)
            text = b""
            while True:
                try:
                    chunk = os.read(self.report, 4096)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                text += chunk
        finally:
            os.close(self.report)
        usage: ChildUsage | None = None
        failed: int | None = None
        for line in text.decode("ascii", "replace").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] == "exec" and fields[1].isdigit():
                failed = int(fields[1])
            elif len(fields) == 6 and all(f.lstrip("-").isdigit() for f in fields):
                status, rss, user_us, system_us, forked_ns, reaped_ns = map(int, fields)
                usage = ChildUsage(returncode=os.waitstatus_to_exitcode(status), rss_kb=rss,
                                   cpu_ms=(user_us + system_us) / 1000.0,
                                   forked=forked_ns / 1e9, reaped=reaped_ns / 1e9)
        if failed is not None:
            raise OSError(failed, os.strerror(failed), self.program)
        return usage


def launch(cmd: Sequence[str], launcher: str | os.PathLike[str] | None = None, *,
           stdin: int | IO[Any] | None, stdout: int, stderr: int,
           env: Mapping[str, str] | None = None) -> Launched:
    """Start `cmd` under the launcher (`default_launcher()` when None). Raises OSError
    (FileNotFoundError naming the launcher when it is not built)."""
    path = Path(launcher) if launcher is not None else default_launcher()
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "the benchmark's launcher is not built "
                                "(run: python scripts/build_guests.py)", str(path))
    if not cmd:
        raise ValueError("an empty command")
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([str(path), str(write), *cmd], stdin=stdin, stdout=stdout,
                                stderr=stderr, pass_fds=(write,),
                                env=None if env is None else dict(env))
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return Launched(proc, read, cmd[0])


def measure_process(cmd: Sequence[str], stdin_path: str | None = None,
                    env: Mapping[str, str] | None = None, timeout: float = 600.0,
                    launcher: str | os.PathLike[str] | None = None) -> ProcessRun:
    """Run `cmd` once with stdin from a file (or empty) and time it.

    The clock runs from the fork of the process to its reaping (the launcher's instants);
    the first byte on stdout marks first output. Peak RSS and CPU time are the process's
    own (with the children it reaped). A child still running after `timeout` seconds is
    killed and the sample marked failed.
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    out = bytearray()
    err = bytearray()
    first: float | None = None
    try:
        started = time.perf_counter()
        run = launch(cmd, launcher, stdin=stdin, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env=env)
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    proc = run.proc
    deadline = started + timeout
    timed_out = False
    if proc.stdout is None or proc.stderr is None:  # both are pipes: never taken
        raise RuntimeError("child process without pipes")
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, out)
            selector.register(proc.stderr, selectors.EVENT_READ, err)
            while selector.get_map():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    run.kill()
                    timed_out = True
                    break
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, _CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    if key.data is out and first is None:
                        first = time.perf_counter()
                    key.data.extend(chunk)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): nothing left running
        run.kill()
        with contextlib.suppress(OSError):
            run.finish()
        proc.stdout.close()
        proc.stderr.close()
        raise
    try:
        usage = run.finish()
    finally:
        ended = time.perf_counter()
        proc.stdout.close()
        proc.stderr.close()
    stdout, stderr = bytes(out), bytes(err)
    digest, hot = fingerprint(stdout, stderr)
    if usage is None:  # killed, or the launcher refused to start
        returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        rss_kb, cpu_ms, forked, reaped = None, None, started, ended
    else:
        returncode = usage.returncode
        rss_kb, cpu_ms, forked, reaped = usage.rss_kb, usage.cpu_ms, usage.forked, usage.reaped
    ok = usage is not None and returncode == 0 and not timed_out
    error = ""
    if timed_out:
        error = f"killed after {timeout:g} s"
    elif usage is None:
        tail = stderr[-300:].decode("utf-8", "replace").strip()
        error = f"the launcher ended with {returncode} and no report" + \
            (f": {tail}" if tail else "")
    elif not ok:
        tail = stderr[-300:].decode("utf-8", "replace").strip()
        error = f"exit {returncode}: {tail}" if tail else f"exit {returncode}"
    sample = Sample(
        wall_ms=(reaped - forked) * 1000.0,
        # The byte was written before the process was reaped, whenever this side woke.
        first_ms=None if first is None else max(0.0, min(first, reaped) - forked) * 1000.0,
        cpu_ms=cpu_ms,
        rss_kb=rss_kb,
        hot_ns=hot,
        digest=digest,
        ok=ok,
        error=error,
    )
    return ProcessRun(sample=sample, stdout=stdout, stderr=stderr, returncode=returncode)

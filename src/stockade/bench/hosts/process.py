"""Timing a child process: request to first output byte, to exit, and its rusage.

`wait4` gives the CPU time and peak RSS of the child and of the children it reaped
(crun's container process, a shell's exec), so a process is measured whole.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..guestio import fingerprint
from .base import Sample

__all__ = ["ProcessRun", "measure_process"]

_CHUNK = 1 << 16


@dataclass
class ProcessRun:
    """What one process produced, with its timing `sample`."""

    sample: Sample
    stdout: bytes
    stderr: bytes
    returncode: int


def measure_process(cmd: Sequence[str], stdin_path: str | None = None,
                    env: Mapping[str, str] | None = None, timeout: float = 600.0) -> ProcessRun:
    """Run `cmd` once with stdin from a file (or empty) and time it.

    The clock starts just before the fork and stops when the child is reaped; the first
    byte on stdout marks first output. A child still running after `timeout` seconds is
    killed and the sample marked failed.
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    out = bytearray()
    err = bytearray()
    first: float | None = None
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=None if env is None else dict(env))
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    deadline = started + timeout
    timed_out = False
    if proc.stdout is None or proc.stderr is None:  # both are pipes: never taken
        raise RuntimeError("child process without pipes")
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                proc.kill()
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
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    stdout, stderr = bytes(out), bytes(err)
    digest, hot = fingerprint(stdout, stderr)
    ok = proc.returncode == 0 and not timed_out
    error = ""
    if timed_out:
        error = f"killed after {timeout:g} s"
    elif not ok:
        tail = stderr[-300:].decode("utf-8", "replace").strip()
        error = f"exit {proc.returncode}: {tail}" if tail else f"exit {proc.returncode}"
    sample = Sample(
        wall_ms=(ended - started) * 1000.0,
        first_ms=None if first is None else (first - started) * 1000.0,
        cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000.0,
        rss_kb=int(usage.ru_maxrss),
        hot_ns=hot,
        digest=digest,
        ok=ok,
        error=error,
    )
    return ProcessRun(sample=sample, stdout=stdout, stderr=stderr, returncode=proc.returncode)

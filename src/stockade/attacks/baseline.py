"""Run a module under plain wasmtime defaults, in a child process with a watchdog.

This is the exposure Stockade exists to remove: no fuel, no epoch deadline, no store
limits, no host-call budget, a writable preopen, syncs that reach the disk. The child
inherits nothing dangerous (no environment, no standard streams: output goes to files,
stdin is empty), and the parent kills it with SIGKILL when the watchdog expires.

The child is `stockade.attacks.plain_child`, run as a script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PlainRun", "run_plain", "WATCHDOG_OUTCOME", "KEEP_OUTPUT"]

WATCHDOG_OUTCOME = "watchdog_kill"
KEEP_OUTPUT = 64 * 1024
CHILD = "stockade.attacks.plain_child"


@dataclass(frozen=True)
class PlainRun:
    """How a plain-wasmtime child ended, as the parent saw it.

    `outcome` is `exited`, `trap` or `error` as the child reported it, or
    `watchdog_kill` when the watchdog had to kill it. CPU times come from the kernel's
    accounting of the reaped child (`wait4`), `max_rss` in bytes. `stdout` and `stderr`
    hold at most the first `KEEP_OUTPUT` bytes of each; `output_bytes` counts them whole.
    """

    outcome: str
    exit_code: int | None
    message: str
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    max_rss: int
    stdout: bytes
    stderr: bytes
    output_bytes: int


def run_plain(module: Path, args: tuple[str, ...], dirs: tuple[tuple[Path, str, bool], ...],
              workdir: Path, watchdog: float,
              on_start: Callable[[int], None] | None = None) -> PlainRun:
    """Run `module` with `args` in a child under plain wasmtime and wait at most
    `watchdog` seconds. `dirs` are (host, guest, writable) preopens; `workdir` receives
    the child's output files. `on_start` is called with the child's pid."""
    files = {name: workdir / f"plain.{name}" for name in ("result", "stdout", "stderr")}
    log = workdir / "plain.log"  # the child's own errors, never the guest's output
    command = [sys.executable, "-m", CHILD, *(f"--{k}={v}" for k, v in files.items())]
    for host, guest, writable in dirs:
        command.append(f"--dir={host}:{guest}:{'rw' if writable else 'ro'}")
    command += ["--", str(module), *args]
    started = time.monotonic()
    with log.open("wb") as log_file:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=log_file, env={}, close_fds=True)
    if on_start is not None:
        on_start(child.pid)
    deadline = started + watchdog
    killed = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() >= deadline:
            os.kill(child.pid, signal.SIGKILL)
            _, status, usage = os.wait4(child.pid, 0)
            killed = True
            break
        time.sleep(0.005)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.monotonic() - started
    report = _read_json(files["result"]) if not killed else {}
    if killed:
        outcome, code, message = WATCHDOG_OUTCOME, None, f"killed by the {watchdog:g} s watchdog"
    elif report:
        outcome = str(report.get("outcome", "error"))
        reported = report.get("exit_code")
        code = reported if isinstance(reported, int) else None
        message = str(report.get("message", ""))
    else:  # the child itself failed: its last line of output says why
        failure = _read(log).decode(errors="replace").strip().splitlines()
        outcome, code = "error", None
        message = failure[-1] if failure else f"the child ended with status {child.returncode}"
    return PlainRun(outcome=outcome, exit_code=code, message=message, wall_s=wall,
                    cpu_user_s=usage.ru_utime, cpu_sys_s=usage.ru_stime,
                    max_rss=usage.ru_maxrss * 1024, stdout=_read(files["stdout"]),
                    stderr=_read(files["stderr"]),
                    output_bytes=_size(files["stdout"]) + _size(files["stderr"]))


def _read(path: Path) -> bytes:
    """The first KEEP_OUTPUT bytes: a flood's output is measured, never loaded whole."""
    try:
        with path.open("rb") as handle:
            return handle.read(KEEP_OUTPUT)
    except OSError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

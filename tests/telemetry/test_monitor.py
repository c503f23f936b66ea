"""The security monitor warns while a run approaches its limits, from outside the run."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from stockade.observe import RunInfo
from stockade.policy import Policy
from stockade.result import Outcome, Usage
from stockade.telemetry import SecurityMonitor
from stockade.telemetry.record import MONITOR_WARNING

from .runs import make_run

MiB = 1024**2


def warnings(info: RunInfo) -> dict[str, dict[str, object]]:
    return {str(a["stockade.warning.kind"]): a for n, a in list(info.events)
            if n == MONITOR_WARNING}


def until_warned(info: RunInfo, kind: str, bound: float = 10.0) -> None:
    """Keep the 'guest' busy until the monitor warned about `kind` (or `bound` seconds)."""
    end = time.monotonic() + bound
    while kind not in warnings(info) and time.monotonic() < end:
        sum(range(10_000))


def test_time_and_cpu_warnings_while_running() -> None:
    live: list[dict[str, object]] = []
    monitor = SecurityMonitor(interval=0.02, on_warning=lambda info, attrs: live.append(attrs))
    info, result = make_run(policy=Policy().with_limits(timeout=0.5))

    def guest() -> None:
        monitor.run_started(info)
        until_warned(info, "cpu")
        monitor.run_finished(info, result)

    thread = threading.Thread(target=guest)
    thread.start()
    thread.join()
    monitor.close()
    found = warnings(info)
    assert {"time", "cpu"} <= set(found)
    assert float(found["time"]["stockade.warning.ratio"]) >= 0.8  # type: ignore[arg-type]
    assert found["cpu"]["stockade.warning.limit"] == 0.5
    assert {str(a["stockade.warning.kind"]) for a in live} >= {"time", "cpu"}


def test_memory_warning_at_94_percent() -> None:
    monitor = SecurityMonitor(interval=0.02)
    info, _ = make_run(policy=Policy().with_limits(max_memory=8 * MiB))
    monitor.run_started(info)
    # In this process the baseline is the first sample's resident size.
    end = time.monotonic() + 10
    while monitor._watches[id(info)].rss0 is None and time.monotonic() < end:
        time.sleep(0.01)
    # Touched pages: resident memory grows by 12 MiB, past 94 % of the 8 MiB limit even
    # when the process frees a few MiB of its own while the monitor samples. A mapping of
    # its own: `bytes` of this size may come from heap pages already resident (once an
    # earlier test freed a large block, glibc serves such sizes from its heap).
    with mmap.mmap(-1, 12 * MiB) as ballast:
        for offset in range(0, len(ballast), mmap.PAGESIZE):
            ballast[offset] = 1
        until_warned(info, "memory")
    monitor.close()
    assert "memory" in warnings(info)


def test_worker_memory_is_read_from_proc() -> None:
    code = ("import sys, time\nsys.stdin.readline()\nb = b'x' * (8 << 20)\n"
            "print('ok', flush=True)\ntime.sleep(30)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as worker:
        monitor = SecurityMonitor(interval=0.02)
        info, _ = make_run(policy=Policy().with_limits(max_memory=8 * MiB))
        info = replace(info, pid=worker.pid)
        monitor.run_started(info)  # baseline before the worker allocates
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
        assert worker.stdout.readline() == "ok\n"
        end = time.monotonic() + 10
        while "memory" not in warnings(info) and time.monotonic() < end:
            time.sleep(0.02)
        monitor.close()
        worker.kill()
    assert "memory" in warnings(info)


def test_writable_directory_usage(tmp_path: Path) -> None:
    monitor = SecurityMonitor(interval=0.02)
    info, _ = make_run(policy=Policy().with_limits(disk_quota=1 * MiB, max_files=5))
    info = replace(info, writable_dirs=(tmp_path,))
    monitor.run_started(info)
    for number in range(4):
        (tmp_path / f"f{number}").write_bytes(b"x" * 230_000)
    until_warned(info, "files")
    monitor.close()
    assert {"disk", "files"} <= set(warnings(info))


def test_worker_process_cpu_is_read_from_proc() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monitor = SecurityMonitor(interval=0.02)
        info, _ = make_run(policy=Policy().with_limits(timeout=0.4))
        info = replace(info, pid=worker.pid)
        monitor.run_started(info)
        end = time.monotonic() + 10
        while "cpu" not in warnings(info) and time.monotonic() < end:
            time.sleep(0.02)
        monitor.close()
        assert "cpu" in warnings(info)
    finally:
        worker.kill()
        worker.wait()


def test_final_check_uses_the_result() -> None:
    monitor = SecurityMonitor()
    policy = Policy().with_limits(max_memory=128 * MiB, timeout=10.0)
    info, result = make_run(policy=policy, usage=Usage(wall_ms=8500, cpu_ms=100,
                                                       peak_memory_bytes=121 * MiB))
    monitor.run_started(info)
    new = monitor.final_check(info, result)
    monitor.close()
    assert {str(a["stockade.warning.kind"]) for a in new} == {"time", "memory"}
    assert set(warnings(info)) == {"time", "memory"}


def test_a_limit_that_was_hit_is_not_warned_about() -> None:
    monitor = SecurityMonitor()
    info, result = make_run(Outcome.TIMEOUT, policy=Policy().with_limits(timeout=1.0),
                            usage=Usage(wall_ms=1000, cpu_ms=990))
    monitor.run_started(info)
    assert monitor.final_check(info, result) == []
    monitor.close()
    monitor.close()


def test_runs_below_the_thresholds_stay_quiet() -> None:
    monitor = SecurityMonitor(interval=0.01)
    info, result = make_run(policy=Policy().with_limits(max_memory=120 * MiB))
    monitor.run_started(info)
    time.sleep(0.05)
    monitor.run_finished(info, result)
    monitor.close()
    assert warnings(info) == {} and info.pid == os.getpid()


def test_a_run_never_watched_is_still_checked_at_its_end() -> None:
    # The gateway's inline runs end before a sampler could see them: only the end is told.
    monitor = SecurityMonitor()
    policy = Policy().with_limits(max_memory=128 * MiB, timeout=10.0)
    info, result = make_run(policy=policy, usage=Usage(wall_ms=10, cpu_ms=10,
                                                       peak_memory_bytes=121 * MiB))
    new = monitor.final_check(info, result)
    monitor.close()
    assert [a["stockade.warning.kind"] for a in new] == ["memory"]
    assert set(warnings(info)) == {"memory"}


def test_close_after_an_interrupted_sampler_start() -> None:
    """Ctrl-C can land inside `Thread.start()` (which waits for the thread to begin): the
    monitor then holds a thread that cannot be joined, and `close` (in the command's
    clean-up) raised RuntimeError over the interrupt."""
    monitor = SecurityMonitor(interval=0.02)
    monitor._thread = threading.Thread(target=lambda: None)  # as a start left it: not begun
    monitor.close()
    monitor.close()

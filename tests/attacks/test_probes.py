"""The kernel counters the runner reads: /proc/stat, /proc/diskstats, /proc/<pid>."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.attacks.probes import (
    cpu_times,
    disk_counters,
    disk_for,
    kernel_threads_cpu,
    kernel_threads_delta,
    process_sample,
)

# Attack verdicts read the machine's device flushes, writes and kernel threads.
pytestmark = pytest.mark.alone


def test_machine_cpu_times_only_grow() -> None:
    first = cpu_times()
    sum(range(200_000))
    delta = cpu_times().minus(first)
    assert min(delta.user, delta.system, delta.idle, delta.iowait) >= 0
    assert delta.kernel >= delta.system


def test_the_disk_behind_a_directory_counts_an_fsync(tmp_path: Path) -> None:
    disk = disk_for(tmp_path)
    if disk is None:
        assert os.major(tmp_path.stat().st_dev) == 0  # tmpfs or overlay: no device
        return
    before = disk_counters(disk)
    with open(tmp_path / "f", "wb") as handle:
        handle.write(b"x" * 8192)
        handle.flush()
        os.fsync(handle.fileno())
    after = disk_counters(disk).minus(before)
    assert after.writes >= 1 and after.bytes_written >= 8192


def test_process_sample_of_this_process_and_of_a_missing_one() -> None:
    sample = process_sample(os.getpid())
    assert sample is not None
    assert sample.rss > 1024**2 and sample.fds >= 3 and sample.user > 0
    assert process_sample(2**22 + 12345) is None


def test_kernel_threads_are_found_and_their_cpu_only_grows() -> None:
    before = kernel_threads_cpu()
    assert before  # kthreadd's children: kworkers, ksoftirqd, ...
    assert os.getpid() not in before
    assert kernel_threads_delta(before, kernel_threads_cpu()) >= 0
    assert kernel_threads_delta({}, {7: 1.5, 8: 0.5}) == 2.0

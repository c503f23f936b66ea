"""Process backends' measurements: the peak RSS is the measured process's own (not the
agent's), and nothing a measurement starts outlives the agent that started it."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stockade.bench.hosts.process import LAUNCHER, measure_process

from ..conftest import ROOT

NATIVE = ROOT / "build" / "native" / "bench"
NOOP = str(NATIVE / "noop")


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` ended (or is a zombie no one reaped) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_launcher_is_built() -> None:
    assert os.access(NATIVE / LAUNCHER, os.X_OK), "run: python scripts/build_guests.py"


def test_peak_rss_is_the_process_own_and_not_the_callers() -> None:
    before = measure_process([NOOP]).sample
    assert before.ok, before.error
    assert before.rss_kb is not None and before.rss_kb < 4096  # a static hello: < 4 MiB
    # The caller grows by 200 MiB past its own high-water mark: a child forked from it
    # used to report (at least) that much.
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ballast = b"\x01" * (grown * 1024 + (200 << 20))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > grown + (150 << 10)
    after = measure_process([NOOP]).sample
    del ballast
    assert after.ok, after.error
    assert after.rss_kb is not None and abs(after.rss_kb - before.rss_kb) < 1024


def test_the_other_columns_keep_their_meaning(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 100_000)
    run = measure_process([str(NATIVE / "echo")], str(payload))
    assert run.sample.ok and run.stdout == b"x" * 100_000
    sample = run.sample
    assert sample.first_ms is not None and 0 < sample.first_ms <= sample.wall_ms
    assert sample.cpu_ms is not None and sample.cpu_ms <= sample.wall_ms + 5
    # A child's CPU time: a busy shell loop shows up in it, as with wait4 before.
    busy = measure_process(["sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])
    assert busy.sample.ok and busy.sample.cpu_ms is not None and busy.sample.cpu_ms > 20
    failed = measure_process(["sh", "-c", "echo out; echo why >&2; exit 3"])
    assert failed.returncode == 3 and not failed.sample.ok
    assert failed.sample.error == "exit 3: why" and failed.stdout == b"out\n"
    killed = measure_process(["sh", "-c", "kill -9 $$"])
    assert killed.returncode == -9 and killed.sample.error == "exit -9"
    with pytest.raises(FileNotFoundError):
        measure_process([str(tmp_path / "no-such-program")])


def test_a_timed_out_process_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    run = measure_process(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], timeout=1.0)
    assert not run.sample.ok and run.sample.error == "killed after 1 s"
    assert _gone(int(pid_file.read_text()))


def test_a_measured_process_dies_with_its_agent(tmp_path: Path) -> None:
    """The agent killed outright (SIGKILL: no cleanup of its own) takes the process it
    was measuring with it, through the launcher."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        from stockade.bench.hosts.process import measure_process
        measure_process(["sh", "-c", "echo $$ > {pid_file}; exec sleep 60"])
    """)
    agent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline and agent.poll() is None
            time.sleep(0.05)
    finally:
        agent.kill()
        agent.wait()
    assert _gone(int(pid_file.read_text()))


def test_a_warm_vm_dies_with_its_agent(tmp_path: Path) -> None:
    """What the warm VM's QEMU is started with (`_die_with_parent`), on `sleep`: the agent
    killed outright takes it along."""
    script = textwrap.dedent("""
        import os, subprocess, sys
        from stockade.bench.hosts.vm import _die_with_parent
        child = subprocess.Popen(["sleep", "60"], preexec_fn=_die_with_parent(os.getpid()))
        print(child.pid, flush=True)
        child.wait()
    """)
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
    assert _gone(pid)

"""Every owned host call is bounded in memory and time, whatever counts the guest passes.

Each attack runs in a fresh Python process (the sandbox in-process there), which reports
the run's outcome, its wall time and how much its peak RSS (VmHWM) grew during the run:
the host, not only the guest, must stay within bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import guest

MiB = 1024**2
# "within timeout + 10 %", plus room for a shared, noisy 2-core machine.
SLACK_S = 0.5

_PROBE = r"""
import json, sys, time
from pathlib import Path
from stockade import Invocation, Policy, Sandbox
from stockade.policy import DirGrant

spec = json.loads(sys.argv[1])
policy = Policy.from_profile(spec["profile"]).with_limits(**spec["limits"])
if spec["out"]:
    policy = policy.with_capabilities(dirs=(DirGrant(Path(spec["out"]), "/out", writable=True),))
sandbox = Sandbox(policy)
module = sandbox.load(spec["module"])
sandbox.run(module, Invocation(args=tuple(spec["warm"])))  # compiled, trampolines built

def hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

before = hwm()
started = time.monotonic()
result = sandbox.run(module, Invocation(args=tuple(spec["args"]),
                                        stdin=b"i" * spec["stdin"]))
wall = time.monotonic() - started
print(json.dumps({"outcome": result.outcome.value, "wall": wall, "growth": hwm() - before,
                  "stdout": len(result.stdout), "stderr": result.stderr.decode(),
                  "text": result.stdout[:4096].decode(errors="replace"),
                  "stdout_truncated": result.stdout_truncated,
                  "bytes_written": result.usage.bytes_written, "message": result.message}))
"""


def probe(name: str, *args: str, profile: str = "strict", out: Path | None = None,
          stdin: int = 0, **limits: Any) -> dict[str, Any]:
    """Run guest `name` with `args` in a fresh process; its report as a dict."""
    warm = ["zero", "stdout", "1"] if name.startswith("iovec") else ["many", "1", "0"]
    spec = {"module": str(guest(name)), "args": list(args), "profile": profile, "warm": warm,
            "limits": limits, "out": str(out) if out else None, "stdin": stdin}
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(spec)],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def calls(report: dict[str, Any]) -> list[tuple[int, int]]:
    """(errno, bytes) of each call the guest reported."""
    found = []
    for line in report["stderr"].splitlines():
        if line.startswith("iovec_bomb: call"):
            words = line.split()
            found.append((int(words[4]), int(words[6])))
    return found


def test_stdout_iovecs_over_one_buffer_do_not_grow_the_host() -> None:
    # 128 iovecs over one 8 MiB buffer: 1 GiB if gathered; the cap is 1 MiB.
    report = probe("iovec_bomb.wasm", "same", "stdout")
    assert report["outcome"] == "output_limit", report
    # The first call keeps the room left and stops the guest: it asked for more.
    assert report["stdout"] == 1 * MiB
    assert report["growth"] < 64 * MiB, report


def test_stdout_short_write_then_the_guest_goes_on() -> None:
    # Under a larger cap a call accepts what fits (WASI short write), never more.
    report = probe("iovec_bomb.wasm", "same", "stdout", "128", "1", profile="default")
    assert report["growth"] < 64 * MiB, report
    accepted = calls(report)
    assert accepted and all(errno == 0 for errno, _ in accepted)
    # Each call copies at most MAX_IO_BYTES (4 MiB) of its 128 MiB.
    assert all(0 < count <= 4 * MiB for _, count in accepted)
    assert report["stdout"] >= sum(count for _, count in accepted)


@pytest.mark.parametrize("target", ["stdout", "file", "stdin"])
def test_millions_of_zero_length_iovecs_are_refused_at_once(target: str, tmp_path: Path) -> None:
    report = probe("iovec_bomb.wasm", "zero", target, profile="default", timeout=1.0,
                   out=tmp_path, stdin=16)
    assert report["wall"] <= 1.1 + SLACK_S, report
    assert report["outcome"] == "exited", report
    assert calls(report) == [(28, 0)]  # EINVAL: more than IOV_MAX (1024) iovecs
    assert report["growth"] < 64 * MiB + 15_000_000 * 8, report  # the guest's own array


def test_file_write_iovecs_over_one_buffer(tmp_path: Path) -> None:
    report = probe("iovec_bomb.wasm", "same", "file", profile="default", out=tmp_path)
    assert report["growth"] < 64 * MiB, report
    written = (tmp_path / "bomb.bin").stat().st_size
    assert written == report["bytes_written"] == sum(n for _, n in calls(report))
    assert written <= 4 * 8 * MiB


def test_file_write_within_disk_quota(tmp_path: Path) -> None:
    report = probe("iovec_bomb.wasm", "same", "file", profile="default", out=tmp_path,
                   disk_quota=12 * MiB)
    assert report["outcome"] == "disk_quota", report
    assert (tmp_path / "bomb.bin").stat().st_size <= 12 * MiB


def test_stdin_iovecs_over_one_buffer() -> None:
    report = probe("iovec_bomb.wasm", "same", "stdin", stdin=3 * MiB)
    assert report["outcome"] == "exited", report
    assert report["growth"] < 64 * MiB, report
    assert sum(n for _, n in calls(report)) == 3 * MiB


@pytest.mark.parametrize("clock", ["mono", "real"])
def test_absolute_sleep_stops_at_the_deadline(clock: str) -> None:
    report = probe("poll_bomb.wasm", "abs", "8", clock, timeout=1.0)
    assert report["outcome"] == "timeout", report
    assert 0.9 <= report["wall"] <= 1.1 + SLACK_S, report


def test_absolute_sleep_within_the_deadline_completes() -> None:
    report = probe("poll_bomb.wasm", "abs", "1", "mono", timeout=10.0)
    assert report["outcome"] == "exited", report
    assert 0.9 <= report["wall"] <= 1.1 + SLACK_S, report


def test_millions_of_subscriptions_are_refused_at_once() -> None:
    report = probe("poll_bomb.wasm", "many", "1300000", profile="default", timeout=1.0)
    assert report["wall"] <= 1.1 + SLACK_S, report
    assert report["outcome"] == "exited", report
    assert "poll_bomb: errno 28 events 0" in report["text"], report


def test_many_clocks_within_the_bound_sleep_to_the_deadline() -> None:
    report = probe("poll_bomb.wasm", "many", "4096", "8", profile="default", timeout=1.0)
    assert report["outcome"] == "timeout", report
    assert report["wall"] <= 1.1 + SLACK_S, report


def test_mixed_descriptor_and_long_clock_poll_is_bounded() -> None:
    # stdin is ready at once: the poll returns its event without waiting for the clock.
    report = probe("poll_bomb.wasm", "mixed", "8", "0", profile="default", timeout=1.0)
    assert report["outcome"] == "exited", report
    assert report["wall"] <= 1.1 + SLACK_S, report


"""Hostile arguments to the owned host calls: path lengths, aliased results, unknown
descriptors, iovec counts, moved directories and the host's own descriptor table.

Each test runs `guests/attacks/hostcall_args.c`, which calls the WASI imports directly
with what no libc would pass. Attacks whose cost lands on the host (memory, descriptors)
run in a fresh Python process that reports what the host itself used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest

# WASI errno numbers as the guest sees them.
EBADF, EINVAL, ENAMETOOLONG, EPERM = 8, 28, 37, 63
MiB, GiB = 1024**2, 1024**3

_CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
from stockade import Invocation, Policy, Sandbox
from stockade.policy import DirGrant

spec = json.loads(sys.argv[1])
if spec["nofile"]:
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec["nofile"], spec["nofile"]))
out = Path(tempfile.mkdtemp())
policy = Policy.from_profile(spec["profile"]).with_limits(**spec["limits"]).with_capabilities(
    dirs=(DirGrant(out, "/out", writable=True),))
sandbox = Sandbox(policy)
module = sandbox.load(spec["module"])
sandbox.run(module, Invocation(args=("badfd", "mkdir", "99")))  # compiled, trampolines built

def hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

before, runs = hwm(), []
for args in spec["runs"]:
    result = sandbox.run(module, Invocation(args=tuple(args)))
    runs.append({"outcome": result.outcome.value, "stdout": result.stdout.decode(),
                 "message": result.message})
print(json.dumps({"growth": hwm() - before, "runs": runs}))
"""


def child(*runs: tuple[str, ...], profile: str = "default", nofile: int = 0,
          **limits: Any) -> dict[str, Any]:
    """Run the guest once per `runs` entry in a fresh process; its report."""
    spec = {"module": str(guest("attacks/hostcall_args.wasm")), "runs": runs,
            "profile": profile, "limits": limits, "nofile": nofile}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)],
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run(policy: Policy, *args: str) -> Result:
    return Sandbox(policy).run(guest("attacks/hostcall_args.wasm"), Invocation(args=args))


def writable(out: Path, profile: str = "default", **limits: object) -> Policy:
    return Policy.from_profile(profile).with_limits(**limits).with_capabilities(
        dirs=(DirGrant(out, "/out", writable=True),))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


_PATH_CALLS = ["symlink_target", "symlink_link", "open", "mkdir", "rename", "link", "unlink"]


def test_guest_sized_paths_are_refused_before_they_are_read() -> None:
    # 64 MiB of "a/": one Python object per component would be gigabytes on the host.
    runs = [("longpath", call, "64", fd) for call in _PATH_CALLS for fd in ("3", "99")]
    report = child(*runs, timeout=10.0)
    # The guest's own 64 MiB path is the only large thing in the process.
    assert report["growth"] < 64 * MiB + 64 * MiB, report
    for args, done in zip(runs, report["runs"], strict=True):
        assert done["outcome"] == "exited", (args, done)
        assert done["stdout"] == f"{args[1]}: errno {ENAMETOOLONG}\n", (args, done)


def test_a_directory_of_climbing_links_cannot_be_moved_above_them(out: Path) -> None:
    result = run(writable(out), "lift")
    assert result.outcome is Outcome.EXITED, result.message
    assert result.stdout.startswith(f"lift: symlink={EPERM} ".encode()), result.stdout
    root = out.resolve()
    for where, dirs, files in os.walk(out):
        for name in dirs + files:
            path = Path(where) / name
            if path.is_symlink():
                assert path.resolve().is_relative_to(root), (path, os.readlink(path))


def test_a_write_whose_count_aliases_its_iovec_is_charged_what_it_wrote(out: Path) -> None:
    result = run(writable(out, disk_quota=10 * MiB), "alias", "3")
    assert (result.outcome, result.exit_code) == (Outcome.DISK_QUOTA, 153), result.stdout
    assert (out / "f").stat().st_size <= 10 * MiB
    assert result.usage.bytes_written <= 10 * MiB


def test_a_write_whose_count_aliases_its_iovec_reports_the_real_count(out: Path) -> None:
    result = run(writable(out, disk_quota=4 * GiB), "alias", "3")
    assert result.outcome is Outcome.EXITED, result.message
    written = 4 * MiB
    assert result.stdout == f"alias: errno 0 nwritten {written}\n".encode()
    assert (out / "f").stat().st_size == 3 * GiB + written
    assert result.usage.bytes_written == 3 * GiB + written


@pytest.mark.parametrize("call", ["mkdir", "creat", "symlink", "link"])
def test_creates_on_an_unknown_descriptor_are_wasmtimes_to_answer(out: Path, call: str) -> None:
    result = run(writable(out, "strict"), "badfd", call, "99")
    assert result.outcome is Outcome.EXITED, result.message
    assert result.stdout == f"badfd {call}: errno {EBADF}\n".encode()
    assert result.usage.files_created == 0
    assert os.listdir(out) == []


@pytest.mark.parametrize("call", ["pread", "read", "sock_recv", "sock_send"])
def test_every_iovec_call_refuses_millions_of_iovecs(out: Path, call: str) -> None:
    result = run(writable(out), "iovecs", call, "2000000")
    assert result.outcome is Outcome.EXITED, result.message
    # No descriptor is a socket: the sock_* calls answer that before reading any iovec.
    errno = EBADF if call.startswith("sock_") else EINVAL
    assert result.stdout == f"iovecs {call}: errno {errno} n 0\n".encode()


def test_pread_within_the_iovec_bound_still_reads(out: Path) -> None:
    result = run(writable(out), "iovecs", "pread", "1024")
    assert result.stdout == b"iovecs pread: errno 0 n 16\n", result.message


def test_the_descriptor_quota_is_met_before_the_hosts_table_is_full() -> None:
    # The permissive profile allows 1,024 descriptors, as many as this process may hold.
    report = child(("hoard", "5000"), profile="permissive", nofile=1024)
    done = report["runs"][0]
    assert done["outcome"] == "fd_quota", done

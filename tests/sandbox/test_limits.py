"""Each hostile guest is stopped with the right outcome, and the host stays within bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest

MiB = 1024**2


def run(policy: Policy, name: str, *args: str) -> tuple[Sandbox, object]:
    sandbox = Sandbox(policy)
    return sandbox, sandbox.run(guest(name), Invocation(args=args))


def test_hello_exits_cleanly() -> None:
    result = Sandbox().run(guest("hello.wasm"), Invocation(args=("world",), stdin=b"piped\n"))
    assert result.outcome is Outcome.EXITED
    assert (result.exit_code, result.guest_exit_code) == (0, 0)
    assert result.stdout == b"Hello from a Stockade sandbox!\narg 1: world\npiped\n"
    assert result.usage.fuel_consumed is None  # the default profile meters no fuel
    rendered = result.to_dict()  # what --json prints: not metered is null, not 0
    assert rendered["usage"]["fuel_consumed"] is None and rendered["limits"]["fuel"] is None
    assert result.usage.peak_memory_bytes > 0
    metered = Sandbox(Policy.from_profile("strict")).run(guest("hello.wasm"))
    assert metered.ok and metered.usage.fuel_consumed is not None \
        and metered.usage.fuel_consumed > 0


def test_guest_exit_code_is_passed_through() -> None:
    result = Sandbox().run(guest("exitcode.wasm"), Invocation(args=("7",)))
    assert (result.outcome, result.exit_code, result.guest_exit_code) == (Outcome.EXITED, 7, 7)


@pytest.mark.alone  # how soon the deadline stops it, within 10 %: no other test's load
def test_timeout_stops_spinning_guest() -> None:
    policy = Policy.from_profile("default").with_limits(timeout=0.5, fuel=None)
    result = Sandbox(policy).run(guest("spin.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.TIMEOUT, 124)
    assert result.usage.wall_ms <= 500 * 1.1


@pytest.mark.alone  # how soon the deadline stops it, within 10 %: no other test's load
def test_timeout_holds_while_guest_sleeps_in_host_call() -> None:
    policy = Policy.from_profile("default").with_limits(timeout=1.0)
    result = Sandbox(policy).run(guest("sleeper.wasm"), Invocation(args=("8",)))
    assert (result.outcome, result.exit_code) == (Outcome.TIMEOUT, 124)
    assert result.usage.wall_ms <= 1000 * 1.1
    assert result.stdout == b"sleeping 8 s\n"


def test_short_sleep_completes() -> None:
    policy = Policy.from_profile("default").with_limits(timeout=5.0)
    result = Sandbox(policy).run(guest("sleeper.wasm"), Invocation(args=("1",)))
    assert result.outcome is Outcome.EXITED
    assert result.stdout == b"sleeping 1 s\nwoke up\n"
    assert result.usage.wall_ms >= 1000


def test_fuel_exhaustion() -> None:
    policy = Policy.from_profile("default").with_limits(fuel=1_000_000)
    result = Sandbox(policy).run(guest("spin.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.FUEL_EXHAUSTED, 124)
    assert result.usage.fuel_consumed == 1_000_000


def test_memory_hog_stops_at_limit() -> None:
    policy = Policy.from_profile("default").with_limits(max_memory=16 * MiB)
    result = Sandbox(policy).run(guest("memhog.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.MEMORY_LIMIT, 137)
    assert result.usage.peak_memory_bytes <= 16 * MiB


def test_declared_memory_above_limit_is_refused() -> None:
    module = b'(module (memory (export "memory") 512) (func (export "_start")))'
    policy = Policy.from_profile("strict")  # 16 MiB < 512 pages = 32 MiB
    result = Sandbox(policy).run(module)
    assert (result.outcome, result.exit_code) == (Outcome.MEMORY_LIMIT, 137)


def test_stack_recursion_traps() -> None:
    result = Sandbox(Policy.from_profile("strict")).run(guest("recurse.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.TRAP, 134)


def test_wasm_stack_overflow_traps() -> None:
    module = (b'(module (memory (export "memory") 1) (func $f (call $f))'
              b' (export "_start" (func $f)))')
    result = Sandbox(Policy.from_profile("strict")).run(module)
    assert (result.outcome, result.exit_code) == (Outcome.TRAP, 134)
    assert "stack" in result.message


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_stopped_at_cap(stream: str) -> None:
    policy = Policy.from_profile("default").with_limits(max_output=1 * MiB)
    result = Sandbox(policy).run(guest("flood.wasm"), Invocation(args=(stream,)))
    assert (result.outcome, result.exit_code) == (Outcome.OUTPUT_LIMIT, 153)
    captured = result.stdout if stream == "stdout" else result.stderr
    assert len(captured) == 1 * MiB
    assert getattr(result, f"{stream}_truncated")


def writable(tmp_path: Path, **limits: object) -> Policy:
    grant = DirGrant(tmp_path, "/out", writable=True)
    return Policy.from_profile("default").with_limits(**limits).with_capabilities(dirs=(grant,))


def test_file_spam_stopped_at_file_quota(tmp_path: Path) -> None:
    result = Sandbox(writable(tmp_path, max_files=50)).run(guest("filespam.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.FILE_QUOTA, 153)
    assert len(list(tmp_path.iterdir())) == 50
    assert result.usage.files_created == 50


def test_disk_fill_stopped_at_quota(tmp_path: Path) -> None:
    result = Sandbox(writable(tmp_path, disk_quota=2 * MiB)).run(guest("diskfill.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.DISK_QUOTA, 153)
    on_disk = (tmp_path / "fill.bin").stat().st_size
    assert on_disk <= 2 * MiB * 1.1
    assert result.usage.bytes_written == on_disk


def test_descriptor_hoard_stopped_at_cap(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    policy = Policy.from_profile("strict").with_capabilities(
        dirs=(DirGrant(tmp_path, "/data"),))
    result = Sandbox(policy).run(guest("fdhoard.wasm"), Invocation(args=("/data/f",)))
    assert (result.outcome, result.exit_code) == (Outcome.FD_QUOTA, 153)


def test_strict_profile_allows_no_writes(tmp_path: Path) -> None:
    policy = Policy.from_profile("strict").with_capabilities(
        dirs=(DirGrant(tmp_path, "/out", writable=True),))
    result = Sandbox(policy).run(guest("diskfill.wasm"))
    assert result.outcome in (Outcome.FILE_QUOTA, Outcome.DISK_QUOTA)
    assert not any(tmp_path.iterdir())


def test_hostcall_budget(tmp_path: Path) -> None:
    policy = Policy.from_profile("default").with_limits(max_hostcalls=100, max_output=1024**3)
    result = Sandbox(policy).run(guest("flood.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.HOSTCALL_LIMIT, 153)
    assert result.usage.hostcalls["fd_write"] == 101


def test_trap_is_reported() -> None:
    result = Sandbox().run(guest("trap.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.TRAP, 134)
    assert "unreachable" in result.message


def test_a_cpu_burn_under_the_default_profile_stops_at_its_timeout() -> None:
    # No instruction budget by default: the epoch deadline alone must stop the spin.
    policy = Policy.from_profile("default").with_limits(timeout=0.3)
    result = Sandbox(policy).run(guest("spin.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.TIMEOUT, 124)
    assert result.usage.fuel_consumed is None
    assert 300 <= result.usage.wall_ms < 300 + 2000  # generous: a shared, noisy machine


SHARED_DESCRIPTORS = """
import asyncio, json, os, resource, sys
from pathlib import Path
from stockade import Invocation, Policy, SandboxPool
from stockade.policy import DirGrant

data, module, runs, each, room = Path(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:])
policy = Policy.from_profile("default").with_capabilities(dirs=(DirGrant(data, "/data"),))
policy = policy.with_limits(max_open_files=100)

async def main() -> list[list[object]]:
    async with SandboxPool(policy, size=runs) as pool:
        await pool.warm()
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + room,
                                                    resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        done = await asyncio.gather(*(pool.run(module, Invocation(
            args=("/data/f", str(each), "1"))) for _ in range(runs)))
    return [[run.outcome.value, run.stdout.decode()] for run in done]

print(json.dumps(asyncio.run(main())))
"""


def _shared(tmp_path: Path, runs: int, each: int, room: int) -> list[tuple[str, str]]:
    """`runs` runs at once in one process, each holding `each` files for a second, with
    room for `room` more descriptors: (outcome, stdout) of each."""
    import json
    import subprocess
    import sys

    (tmp_path / "f").write_text("x")
    done = subprocess.run([sys.executable, "-c", SHARED_DESCRIPTORS, str(tmp_path),
                           str(guest("fdhold.wasm")), str(runs), str(each), str(room)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [(outcome, stdout) for outcome, stdout in json.loads(done.stdout)]


def test_runs_in_one_process_share_its_descriptors(tmp_path: Path) -> None:
    """Each run's descriptor cap was what the process could still open when it started:
    concurrent runs each claimed the same room, and the last ones' opens failed (EIO, or
    EACCES), outcome `exited`, where the README promises `fd_quota` (found by review). A
    run now books its descriptors from what the others have not: those past it are
    stopped at their quota."""
    runs = _shared(tmp_path, 4, 90, 250)  # four runs wanting 90 each cannot all have them
    assert all("failed" not in stdout for _, stdout in runs), runs
    outcomes = sorted(outcome for outcome, _ in runs)
    assert outcomes.count("exited") >= 2 and "fd_quota" in outcomes, runs


def test_runs_opening_a_few_files_are_not_refused_for_what_others_might_open(
        tmp_path: Path) -> None:
    """Booking each run's whole cap (100) as it started stopped half of eight runs
    holding 3 files each before their first open, with 400 descriptors free (found by
    the fix's review). Room is booked as files are opened."""
    runs = _shared(tmp_path, 8, 3, 400)
    assert [outcome for outcome, _ in runs] == ["exited"] * 8, runs
    assert all(stdout == "held 3 descriptors\n" for _, stdout in runs), runs


def test_symlink_targets_count_toward_the_disk_quota(tmp_path: Path) -> None:
    """A symlink's target is stored on the disk, yet no write carries it: 5,000 links of
    4,000 bytes stored 20 MB under a 1 MiB quota, `bytes_written` 0 (found by review).
    Each target is charged as its link is made, on every backend."""
    import json

    from tests.conftest import stockade

    policy = Policy.from_profile("permissive").with_limits(
        disk_quota=MiB, max_files=5000).with_capabilities(
        dirs=(DirGrant(tmp_path / "in", "/w", writable=True),))
    (tmp_path / "in").mkdir()
    result = Sandbox(policy).run(guest("symfill.wasm"), Invocation(args=("5000",)))
    assert result.outcome is Outcome.DISK_QUOTA, (result.outcome, result.stdout)
    assert MiB - 4000 < result.usage.bytes_written <= MiB
    assert len(list((tmp_path / "in").iterdir())) <= MiB // 3999
    (tmp_path / "cli").mkdir()
    done = stockade("run", "--json", "--profile", "permissive", "--disk-quota", "1MiB",
                    "--max-files", "5000", "--dir", f"{tmp_path / 'cli'}:/w:rw",
                    str(guest("symfill.wasm")), "5000")
    shown = json.loads(done.stdout)
    assert shown["outcome"] == "disk_quota", shown
    assert MiB - 4000 < shown["usage"]["bytes_written"] <= MiB

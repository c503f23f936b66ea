"""The owned host calls hold the same on both backends: each hostile guest runs under the
wasmtime-py sandbox and under `FastEngine.run_metered` (the C-API fast path), each in
its own directory, and gets the same outcome, errnos, output, counts and files on
both; a guest gets no more on the fast path than in the sandbox.

The fast runs mirror what `Sandbox` does with a policy: the engine configuration and
memory of its limits, a `Meter` made just before the run with the deadline, preopens
and standard input, the guest's environment and argv[0].
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.engine.config import EngineConfig
from stockade.engine.fastpath import FastEngine, FastModule
from stockade.hostcalls import Meter
from stockade.policy import DirGrant
from stockade.sandbox.wasi import checked_preopens, guest_env
from tests.conftest import guest

MiB, TiB = 1024**2, 1024**4
# WASI errno numbers as the guest sees them.
EACCES, EBADF, EFAULT, EINVAL, ENAMETOOLONG, EPERM = 2, 8, 21, 28, 37, 63
SLACK_S = 0.5  # "within timeout + 10 %", plus room for a shared, noisy machine


class Fast:
    """Runs guests on `FastEngine.run_metered` as `Sandbox.run` runs them."""

    def __init__(self) -> None:
        self.engines: dict[tuple[EngineConfig, int], FastEngine] = {}
        self.modules: dict[tuple[int, str], FastModule] = {}

    def engine(self, policy: Policy, max_instances: int = 4) -> FastEngine:
        limits = policy.limits
        key = (EngineConfig.for_limits(limits), limits.max_memory)
        if key not in self.engines:
            self.engines[key] = FastEngine(key[0], max_instances=max_instances,
                                           max_memory=limits.max_memory)
        return self.engines[key]

    def module(self, engine: FastEngine, path: Path) -> FastModule:
        key = (id(engine), str(path))
        if key not in self.modules:
            data = path.read_bytes()
            if path.suffix == ".wat":
                data = bytes(wasmtime.wat2wasm(data.decode()))
            self.modules[key] = engine.compile(data, path.name)
        return self.modules[key]

    def run(self, policy: Policy, path: Path, invocation: Invocation,
            engine: FastEngine | None = None) -> Result:
        engine = engine or self.engine(policy)
        limits = policy.limits
        module = self.module(engine, path)
        deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
        with checked_preopens(policy) as preopens:
            meter = Meter(limits, deadline, preopens, invocation.stdin)
            result = engine.run_metered(module, meter, invocation.args,
                                        guest_env(policy, invocation),
                                        dirs=[grant.guest for grant in policy.capabilities.dirs],
                                        program=path.name)
        return result.to_result(path.name, "", policy.limits.as_dict())

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


@pytest.fixture(scope="module")
def fast() -> Iterator[Fast]:
    runner = Fast()
    yield runner
    runner.close()


Setup = Callable[[Path], None]
PolicyFor = Callable[[Path], Policy]


def both(fast: Fast, tmp_path: Path, policy_for: PolicyFor, name: str, *args: str,
         stdin: bytes = b"", setup: Setup | None = None) -> dict[str, tuple[Result, Path]]:
    """Run guest `name` on each backend, in a directory of its own (`setup` prepares
    it; `policy_for` makes the policy for it): backend -> (result, directory)."""
    runs = {}
    for backend in ("sandbox", "fast"):
        where = tmp_path / backend
        where.mkdir()
        if setup is not None:
            setup(where)
        policy = policy_for(where)
        invocation = Invocation(args=args, stdin=stdin)
        path = guest(name) if not name.startswith("/") else Path(name)
        result = Sandbox(policy).run(path, invocation) if backend == "sandbox" \
            else fast.run(policy, path, invocation)
        runs[backend] = (result, where)
    return runs


def same(runs: dict[str, tuple[Result, Path]], *, output: bool = True,
         counts: bool = True) -> Result:
    """Assert both backends ended alike; the fast path's result. `output` compares what
    the guest printed and `counts` the usage counts (off where they depend on timing)."""
    sandbox, fast = runs["sandbox"][0], runs["fast"][0]
    assert (fast.outcome, fast.exit_code, fast.guest_exit_code, fast.message) == \
        (sandbox.outcome, sandbox.exit_code, sandbox.guest_exit_code, sandbox.message), \
        (fast.message, sandbox.message, fast.stdout[-300:], sandbox.stdout[-300:])
    assert (fast.stdout_truncated, fast.stderr_truncated) == \
        (sandbox.stdout_truncated, sandbox.stderr_truncated)
    if output:
        assert fast.stdout == sandbox.stdout
        assert fast.stderr == sandbox.stderr
    if counts:
        assert (fast.usage.files_created, fast.usage.bytes_written, fast.usage.hostcalls) == \
            (sandbox.usage.files_created, sandbox.usage.bytes_written, sandbox.usage.hostcalls)
    assert tree(runs["fast"][1]) == tree(runs["sandbox"][1])
    return fast


def tree(root: Path) -> list[tuple[str, str, int]]:
    """(relative path, kind, apparent size or link target length) under `root`."""
    found = []
    for where, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(where) / name
            info = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            size = len(os.readlink(path)) if kind == "link" else \
                0 if kind == "dir" else info.st_size
            found.append((str(path.relative_to(root)), kind, size))
    return sorted(found)


def profile(name: str = "default", **limits: object) -> PolicyFor:
    return lambda _where: Policy.from_profile(name).with_limits(**limits)


def writable(name: str = "default", guest_path: str = "/out", **limits: object) -> PolicyFor:
    return lambda where: Policy.from_profile(name).with_limits(**limits).with_capabilities(
        dirs=(DirGrant(where, guest_path, writable=True),))


def readable(name: str = "default", guest_path: str = "/data", **limits: object) -> PolicyFor:
    return lambda where: Policy.from_profile(name).with_limits(**limits).with_capabilities(
        dirs=(DirGrant(where, guest_path),))


# -- the standard streams, budgets and deadlines ------------------------------------------

def test_hello_reads_stdin_and_writes_stdout(fast: Fast, tmp_path: Path) -> None:
    result = same(both(fast, tmp_path, profile(), "hello.wasm", "world", stdin=b"piped\n"))
    assert result.outcome is Outcome.EXITED
    assert result.stdout == b"Hello from a Stockade sandbox!\narg 1: world\npiped\n"
    assert result.usage.hostcalls["fd_write"] >= 1


def test_large_stdin_round_trips(fast: Fast, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096
    result = same(both(fast, tmp_path, profile(), "hello.wasm", stdin=payload))
    assert result.stdout.endswith(payload)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_stopped_at_the_cap(fast: Fast, tmp_path: Path, stream: str) -> None:
    result = same(both(fast, tmp_path, profile(max_output=MiB), "flood.wasm", stream))
    assert (result.outcome, result.exit_code) == (Outcome.OUTPUT_LIMIT, 153)
    assert len(result.stdout if stream == "stdout" else result.stderr) == MiB


def test_hostcall_budget(fast: Fast, tmp_path: Path) -> None:
    result = same(both(fast, tmp_path, profile(max_hostcalls=100, max_output=1024**3),
                       "flood.wasm"))
    assert (result.outcome, result.exit_code) == (Outcome.HOSTCALL_LIMIT, 153)
    assert result.usage.hostcalls["fd_write"] == 101


def test_per_call_cap(fast: Fast, tmp_path: Path) -> None:
    policy = profile(hostcall_caps=(("fd_write", 10),), max_output=1024**3)
    result = same(both(fast, tmp_path, policy, "flood.wasm"))
    assert result.outcome is Outcome.HOSTCALL_LIMIT and "fd_write" in result.message
    assert result.usage.hostcalls["fd_write"] == 11


def test_a_sleep_is_stopped_at_the_deadline(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, profile(timeout=1.0), "sleeper.wasm", "8")
    result = same(runs)
    assert result.outcome is Outcome.TIMEOUT and result.stdout == b"sleeping 8 s\n"
    assert result.usage.wall_ms <= (1.1 + SLACK_S) * 1000


@pytest.mark.parametrize("clock", ["mono", "real"])
def test_an_absolute_sleep_is_stopped_at_the_deadline(fast: Fast, tmp_path: Path,
                                                       clock: str) -> None:
    runs = both(fast, tmp_path, profile(timeout=1.0), "poll_bomb.wasm", "abs", "8", clock)
    result = same(runs)
    assert result.outcome is Outcome.TIMEOUT
    assert 0.9 * 1000 <= result.usage.wall_ms <= (1.1 + SLACK_S) * 1000


def test_millions_of_subscriptions_are_refused_at_once(fast: Fast, tmp_path: Path) -> None:
    # Filling 62 MB of subscriptions takes the guest a while on a loaded machine.
    runs = both(fast, tmp_path, profile(timeout=20.0), "poll_bomb.wasm", "many", "1300000")
    result = same(runs)
    assert result.outcome is Outcome.EXITED
    assert b"poll_bomb: errno 28 events 0" in result.stdout


def test_a_mixed_poll_returns_the_ready_descriptor(fast: Fast, tmp_path: Path) -> None:
    result = same(both(fast, tmp_path, profile(timeout=1.0), "poll_bomb.wasm", "mixed", "8",
                       "0"))
    assert result.outcome is Outcome.EXITED
    assert result.usage.wall_ms <= (1.1 + SLACK_S) * 1000


@pytest.mark.parametrize("backend", ["metered", "fast", "isolated", "wasmtime"])
def test_a_poll_naming_a_descriptor_that_is_not_there_is_ebadf(
        fast: Fast, tmp_path: Path, backend: str) -> None:
    """wasmtime (and so the sandbox) answers EBADF for the whole call; the unmetered fast
    path answered each subscription, that one with EBADF, and the call with success: a
    guest told its backend by it (found by review)."""
    import os
    import subprocess

    from tests.conftest import STOCKADE

    args = ("mixed", "8", "99")
    if backend == "metered":
        result = same(both(fast, tmp_path, profile(timeout=1.0), "poll_bomb.wasm", *args))
        stdout = result.stdout
    else:
        env = {**os.environ, "STOCKADE_BACKEND": "wasmtime"} if backend == "wasmtime" \
            else dict(os.environ)
        isolate = ("--isolate", "process" if backend == "isolated" else "none")
        done = subprocess.run([*STOCKADE, "run", *isolate, str(guest("poll_bomb.wasm")),
                               *args], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60, check=False)
        stdout = done.stdout
    assert b"poll_bomb: errno 8 events 0" in stdout, stdout


@pytest.mark.parametrize("target", ["stdout", "file", "stdin"])
def test_millions_of_zero_length_iovecs_are_refused(fast: Fast, tmp_path: Path,
                                                    target: str) -> None:
    result = same(both(fast, tmp_path, writable(timeout=2.0), "iovec_bomb.wasm", "zero",
                       target, stdin=b"i" * 16))
    assert result.outcome is Outcome.EXITED
    assert result.stderr == b"iovec_bomb: call 1 errno 28 bytes 0\n"


@pytest.mark.parametrize("memory", ["", '(memory 1) (func $m) (export "memory" (func $m))'])
def test_a_call_without_guest_memory_is_efault(fast: Fast, tmp_path: Path, memory: str) -> None:
    # No memory export, or a function under its name: nothing a WASI call could read or
    # write (wasmtime's own calls trap here; the owned ones answer EFAULT). The guest
    # traps on any other answer.
    module = tmp_path / "nomemory.wat"
    module.write_text(f"""(module
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      {memory}
      (func (export "_start")
        (if (i32.ne (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
                    (i32.const {EFAULT}))
          (then unreachable))))""")
    result = same(both(fast, tmp_path, profile(), str(module)))
    assert (result.outcome, result.guest_exit_code) == (Outcome.EXITED, 0), result.message
    assert result.usage.hostcalls == {"fd_write": 1}


def test_environment_and_preopens_are_seen_alike(fast: Fast, tmp_path: Path) -> None:
    def setup(where: Path) -> None:
        (where / "ro").mkdir()
        (where / "rw").mkdir()
        (where / "ro" / "in.txt").write_text("x")

    def policy_for(where: Path) -> Policy:
        return Policy.from_profile("default").with_capabilities(
            env=(("GREETING", "hi"), ("EMPTY", "")),
            dirs=(DirGrant(where / "ro", "/data"), DirGrant(where / "rw", "/out", writable=True)))

    runs = both(fast, tmp_path, policy_for, "probe.wasm", "/data/in.txt", "/out/none",
                "/etc/passwd", "--write", "/data/new", "/out/new", setup=setup)
    result = same(runs)
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == ["env GREETING=hi", "env EMPTY="]
    assert lines[2] == "read /data/in.txt ok" and lines[-1] == "write /out/new ok"
    assert lines[-2].startswith("write /data/new ") and not lines[-2].endswith(" ok")
    assert sorted(os.listdir(runs["fast"][1] / "rw")) == ["new"]


# -- quotas on writable directories -------------------------------------------------------

def test_file_spam_stopped_at_the_file_quota(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, writable(max_files=50), "filespam.wasm")
    result = same(runs)
    assert (result.outcome, result.exit_code) == (Outcome.FILE_QUOTA, 153)
    assert result.usage.files_created == len(os.listdir(runs["fast"][1])) == 50


def test_disk_fill_stopped_at_the_quota(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, writable(disk_quota=2 * MiB), "diskfill.wasm")
    result = same(runs)
    assert (result.outcome, result.exit_code) == (Outcome.DISK_QUOTA, 153)
    on_disk = (runs["fast"][1] / "fill.bin").stat().st_size
    assert on_disk <= 2 * MiB and result.usage.bytes_written == on_disk


def test_strict_allows_no_writes(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, writable("strict"), "diskfill.wasm")
    result = same(runs)
    assert result.outcome in (Outcome.FILE_QUOTA, Outcome.DISK_QUOTA)
    assert os.listdir(runs["fast"][1]) == []


def test_descriptor_hoard_stopped_at_the_cap(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, readable("strict"), "fdhoard.wasm", "/data/f",
                setup=lambda where: (where / "f").write_text("x"))
    result = same(runs, output=False)  # the count it reached is printed as it goes
    assert (result.outcome, result.exit_code) == (Outcome.FD_QUOTA, 153)


@pytest.mark.parametrize("sync, outcome", [("ignore", Outcome.EXITED),
                                           ("limit:10", Outcome.HOSTCALL_LIMIT),
                                           ("allow", Outcome.EXITED)])
def test_the_sync_policy(fast: Fast, tmp_path: Path, sync: str, outcome: Outcome) -> None:
    result = same(both(fast, tmp_path, writable(sync=sync), "syncer.wasm", "20"))
    assert result.outcome is outcome
    assert result.usage.hostcalls["fd_sync"] == (11 if outcome is Outcome.HOSTCALL_LIMIT
                                                 else 20)


def test_a_renamed_directory_cannot_dodge_the_file_quota(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, writable(max_files=10), "attacks/fs_tricks.wasm", "stale",
                "/out", "5000")
    result = same(runs)
    assert result.outcome is Outcome.FILE_QUOTA
    assert len(tree(runs["fast"][1])) <= 10


@pytest.mark.parametrize("how", ["truncate", "seek", "pwrite", "allocate"])
def test_sparse_growth_is_charged_by_apparent_size(fast: Fast, tmp_path: Path,
                                                   how: str) -> None:
    runs = both(fast, tmp_path, writable(disk_quota=10 * MiB), "attacks/fs_tricks.wasm",
                "grow", how, "/out/big", str(TiB))
    result = same(runs)
    assert result.outcome is Outcome.DISK_QUOTA
    assert sum(size for _, _, size in tree(runs["fast"][1])) <= 10 * MiB


@pytest.mark.parametrize("how", ["truncate", "seek", "pwrite"])
def test_growth_within_the_quota_is_counted(fast: Fast, tmp_path: Path, how: str) -> None:
    runs = both(fast, tmp_path, writable(disk_quota=10 * MiB), "attacks/fs_tricks.wasm",
                "grow", how, "/out/big", str(MiB))
    result = same(runs)
    assert result.outcome is Outcome.EXITED and result.guest_exit_code == 0
    assert MiB <= result.usage.bytes_written <= MiB + 1


def test_a_write_whose_count_aliases_its_iovec(fast: Fast, tmp_path: Path) -> None:
    runs = both(fast, tmp_path, writable(disk_quota=10 * MiB), "attacks/hostcall_args.wasm",
                "alias", "3")
    result = same(runs)
    assert (result.outcome, result.exit_code) == (Outcome.DISK_QUOTA, 153)
    assert result.usage.bytes_written <= 10 * MiB


# -- read-only preopens, escapes, hostile arguments --------------------------------------

@pytest.mark.parametrize("args, errno", [(("create", "/data/new.txt"), EPERM),
                                         (("symlink", "visible.txt", "/data/link"), EPERM),
                                         (("grow", "truncate", "/data/visible.txt", "100"), EPERM),
                                         (("write", "/data/visible.txt"), EBADF)])
def test_a_read_only_preopen_answers_with_an_errno(fast: Fast, tmp_path: Path,
                                                  args: tuple[str, ...], errno: int) -> None:
    runs = both(fast, tmp_path, readable("strict"), "attacks/fs_tricks.wasm", *args,
                setup=lambda where: (where / "visible.txt").write_text("yes"))
    result = same(runs)
    assert result.stdout.decode().endswith(f": errno {errno}\n")
    assert (runs["fast"][1] / "visible.txt").read_text() == "yes"


def test_paths_outside_the_preopen_are_no_existence_oracle(fast: Fast, tmp_path: Path) -> None:
    up = "/data/" + "../" * 64
    paths = [up + "etc/passwd", up + "etc/no-such-file-here", "/etc/passwd", "/no-such-file"]
    result = same(both(fast, tmp_path, readable(), "attacks/fs_tricks.wasm", "probe", *paths))
    answers = [line.split(" ", 2)[2] for line in result.stdout.decode().splitlines()]
    assert answers[0] == answers[1] != "stat=0 open=0"
    assert answers[2] == answers[3] != "stat=0 open=0"


@pytest.mark.parametrize("target, link", [("/etc/passwd", "/out/abs"),
                                          ("../secret.txt", "/out/up"),
                                          ("../visible.txt", "/out/sub/up"),
                                          ("sub/visible.txt", "/out/down")])
def test_symlinks_that_climb_are_refused(fast: Fast, tmp_path: Path, target: str,
                                         link: str) -> None:
    runs = both(fast, tmp_path, writable(), "attacks/fs_tricks.wasm", "symlink", target, link,
                setup=lambda where: (where / "sub").mkdir())
    result = same(runs)
    expected = b"ok" if target == "sub/visible.txt" else f"errno {EPERM}".encode()
    assert result.stdout == f"symlink {link}: ".encode() + expected + b"\n"


@pytest.mark.parametrize("how", ["rename", "link"])
def test_a_climbing_symlink_cannot_be_moved_higher(fast: Fast, tmp_path: Path, how: str) -> None:
    def setup(where: Path) -> None:
        (where / "sub").mkdir()
        (where / "sub" / "up").symlink_to("../visible.txt")

    result = same(both(fast, tmp_path, writable(), "attacks/fs_tricks.wasm", how,
                       "/out/sub/up", "/out/up", setup=setup))
    assert result.stdout == f"{how} /out/up: errno {EPERM}\n".encode()


def test_a_directory_of_climbing_links_cannot_be_lifted(fast: Fast, tmp_path: Path) -> None:
    result = same(both(fast, tmp_path, writable(), "attacks/hostcall_args.wasm", "lift"))
    assert result.stdout.startswith(f"lift: symlink={EPERM} ".encode())


@pytest.mark.parametrize("call", ["symlink_target", "open", "mkdir", "rename", "unlink"])
def test_guest_sized_paths_are_refused(fast: Fast, tmp_path: Path, call: str) -> None:
    result = same(both(fast, tmp_path, writable(timeout=10.0), "attacks/hostcall_args.wasm",
                       "longpath", call, "64", "3"))
    assert result.stdout == f"{call}: errno {ENAMETOOLONG}\n".encode()


@pytest.mark.parametrize("call", ["mkdir", "creat", "symlink", "link"])
def test_creates_on_an_unknown_descriptor(fast: Fast, tmp_path: Path, call: str) -> None:
    result = same(both(fast, tmp_path, writable("strict"), "attacks/hostcall_args.wasm",
                       "badfd", call, "99"))
    assert result.stdout == f"badfd {call}: errno {EBADF}\n".encode()
    assert result.usage.files_created == 0


@pytest.mark.parametrize("call", ["pread", "read", "sock_recv", "sock_send"])
def test_millions_of_iovecs_on_every_iovec_call(fast: Fast, tmp_path: Path, call: str) -> None:
    result = same(both(fast, tmp_path, writable(), "attacks/hostcall_args.wasm", "iovecs",
                       call, "2000000"))
    # No descriptor is a socket: the sock_* calls answer that before reading any iovec.
    errno = EBADF if call.startswith("sock_") else EINVAL
    assert result.stdout == f"iovecs {call}: errno {errno} n 0\n".encode()


# -- the attack catalogue's guests, bounded to run in seconds -----------------------------

WRITES = {"disk_quota": MiB, "max_files": 8}


@pytest.mark.parametrize("name, args, limits, outcome", [
    ("disk_write", ("64", "/scratch"), WRITES, Outcome.DISK_QUOTA),
    ("inode_flood", ("2000", "/scratch", "10"), WRITES, Outcome.FILE_QUOTA),
    ("deep_tree", ("1000", "255", "10", "/scratch"), WRITES, Outcome.FILE_QUOTA),
    ("fd_hoard", ("5000", "/scratch"), {"max_files": 100_000, "max_open_files": 64},
     Outcome.FD_QUOTA),
    ("fsync_storm", ("fsync", "10", "100000000", "/scratch"), {**WRITES, "max_hostcalls": 500},
     Outcome.HOSTCALL_LIMIT),
    ("tiny_io", ("both", "10", "100000000", "/scratch"), {**WRITES, "max_hostcalls": 500},
     Outcome.HOSTCALL_LIMIT),
    ("entropy_flood", ("10", "4096"), {"max_hostcalls": 500}, Outcome.HOSTCALL_LIMIT),
    ("sleep_storm", ("many", "100000", "1"), {"max_hostcalls": 200}, Outcome.HOSTCALL_LIMIT),
    ("output_flood", ("stdout", "64", "10"), {"max_output": MiB}, Outcome.OUTPUT_LIMIT),
    ("net_preview1", ("1", "64"), {}, Outcome.EXITED),
    ("escape", ("/scratch",), WRITES, Outcome.EXITED),
])
def test_attack_guests_are_stopped_alike(fast: Fast, tmp_path: Path, name: str,
                                         args: tuple[str, ...], limits: dict[str, object],
                                         outcome: Outcome) -> None:
    runs = both(fast, tmp_path, writable("default", "/scratch", timeout=20.0, **limits),
                f"attacks/{name}.wasm", *args)
    timed = name in ("net_preview1",)  # loops for a time: its counts vary
    result = same(runs, output=not timed, counts=not timed)
    assert result.outcome is outcome, result.message
    assert b"BREACH" not in result.stdout


def test_devices_in_a_preopen_are_refused_alike(fast: Fast, tmp_path: Path) -> None:
    policy = lambda _where: Policy.from_profile("default").with_capabilities(  # noqa: E731
        dirs=(DirGrant(Path("/dev"), "/dev"),))
    result = same(both(fast, tmp_path, policy, "attacks/device_open.wasm", "/dev", "1"))
    assert result.outcome is Outcome.EXITED
    assert b"BREACH" not in result.stdout


# -- what only the fast path has: a pool of instances, shared slots ----------------------

def test_a_metered_run_fits_an_engine_of_one_instance(fast: Fast, tmp_path: Path) -> None:
    # The forwarding trampoline is a second instance in the run's store.
    policy = writable(disk_quota=2 * MiB)(tmp_path)
    with FastEngine(EngineConfig.for_limits(policy.limits), max_instances=1,
                    max_memory=policy.limits.max_memory) as engine:
        result = fast.run(policy, guest("diskfill.wasm"), Invocation(), engine=engine)
    assert result.outcome is Outcome.DISK_QUOTA, result.message


def test_concurrent_metered_and_plain_runs_keep_their_meters(fast: Fast, tmp_path: Path) -> None:
    policy_for = writable(disk_quota=2 * MiB)
    engine = fast.engine(policy_for(tmp_path))
    plain = fast.module(engine, guest("hello.wasm"))
    results: dict[str, Result] = {}

    def metered(index: int) -> None:
        where = tmp_path / str(index)
        where.mkdir()
        results[f"m{index}"] = fast.run(policy_for(where), guest("diskfill.wasm"), Invocation(),
                                        engine=engine)

    def unmetered(index: int) -> None:
        results[f"p{index}"] = plain.run(stdin=b"x\n").to_result("hello.wasm", "")

    threads = [threading.Thread(target=target, args=(index,))
               for index in range(4) for target in (metered, unmetered)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index in range(4):
        assert results[f"m{index}"].outcome is Outcome.DISK_QUOTA, results[f"m{index}"].message
        assert results[f"m{index}"].usage.bytes_written == \
            (tmp_path / str(index) / "fill.bin").stat().st_size <= 2 * MiB
        assert results[f"p{index}"].outcome is Outcome.EXITED
        assert results[f"p{index}"].stdout.endswith(b"x\n")


def test_host_descriptors_are_released_after_each_run(fast: Fast, tmp_path: Path) -> None:
    def held() -> int:
        return len(os.listdir("/proc/self/fd"))

    policy = writable()(tmp_path)
    path = guest("attacks/fs_tricks.wasm")
    fast.run(policy, path, Invocation(args=("grow", "truncate", "/out/warm", "1")))
    before = held()
    for index in range(3):
        assert fast.run(policy, path, Invocation(args=("stale", "/out", "3"))).outcome \
            is Outcome.EXITED
        for name in ("d", "e"):
            os.rename(tmp_path / name, tmp_path / f"{name}{index}")
    assert held() == before


def test_guest_paths_must_match_the_preopens(fast: Fast, tmp_path: Path) -> None:
    from stockade.errors import UsageError

    policy = writable()(tmp_path)
    engine = fast.engine(policy)
    module = fast.module(engine, guest("hello.wasm"))
    with checked_preopens(policy) as preopens, pytest.raises(UsageError,
                                                             match="one per directory"):
        engine.run_metered(module, Meter(policy.limits, None, preopens), dirs=[])



def test_a_fuel_budget_is_not_dropped_on_an_engine_without_fuel(fast: Fast) -> None:
    # strict's instruction budget on an engine built for the default profile (no fuel):
    # refused, not run without a budget.
    from stockade.errors import UsageError

    engine = fast.engine(Policy.from_profile("default"))
    module = fast.module(engine, guest("spin.wasm"))
    meter = Meter(Policy.from_profile("strict").limits, time.monotonic() + 5, [])
    with pytest.raises(UsageError, match="fuel budget"):
        engine.run_metered(module, meter)

# -- guest addresses of 2 GiB and above -----------------------------------------------------

_HIGH_MEMORY = 3 * 1024**3  # the guest's memory is 2 GiB + 64 KiB


@pytest.mark.parametrize(("limits", "outcome"), [
    ({"max_files": 4}, Outcome.FILE_QUOTA),
    ({"disk_quota": MiB}, Outcome.DISK_QUOTA),
    ({"max_open_files": 12}, Outcome.FD_QUOTA),
])
def test_results_stored_above_2_gib_are_still_charged(fast: Fast, tmp_path: Path,
                                                      limits: dict[str, int],
                                                      outcome: Outcome) -> None:
    # path_open's descriptor and fd_write's count land at 0x80000010: read as a signed
    # i32 that address is negative, the read fails after wasmtime acted, and the new
    # file, its bytes and its descriptor went uncharged (64 files, 16 MiB, 64 fds).
    policy = writable(max_memory=_HIGH_MEMORY, **limits)
    result = same(both(fast, tmp_path, policy, "high_pointers.wasm"))
    assert result.outcome is outcome, result.message
    for backend in ("sandbox", "fast"):
        files = list((tmp_path / backend).iterdir())
        assert len(files) <= limits.get("max_files", 64)
        assert sum(path.stat().st_size for path in files) <= limits.get("disk_quota", 16 * MiB)


# -- the host-call budget counts the same calls on every backend ----------------------------

@pytest.mark.parametrize("name, calls", [("hostcall_mix.wasm", 27), ("hello.wasm", 5)])
def test_the_host_call_budget_counts_alike_on_the_capi_sandbox(name: str, calls: int) -> None:
    # The C-API sandbox's unmetered run counted only the calls its native library serves
    # (5 of hostcall_mix's 27): a budget of 26 let the guest finish there and stopped it
    # in the wasmtime-py sandbox. And a writev to stdout was one call in the sandbox (it
    # gathered every buffer) but one per buffer natively (hello: 4 against 5).
    from stockade.sandbox.capi import CapiSandbox

    for budget, outcome in ((calls, Outcome.EXITED), (calls - 1, Outcome.HOSTCALL_LIMIT)):
        policy = Policy.from_profile("default").with_limits(max_hostcalls=budget)
        results = {}
        for backend in (Sandbox, CapiSandbox):
            with backend(policy) as sandbox:
                results[backend.__name__] = sandbox.run(guest(name), Invocation(stdin=b"x\n"))
        fast, standard = results["CapiSandbox"], results["Sandbox"]
        assert (fast.outcome, fast.exit_code, fast.stdout) == \
            (standard.outcome, standard.exit_code, standard.stdout), (budget, fast.message)
        assert fast.outcome is outcome, fast.message
        if outcome is Outcome.EXITED:
            assert sum(standard.usage.hostcalls.values()) == calls
            # Metered or not, the C API reports the sandbox's counts by call.
            assert fast.usage.hostcalls == standard.usage.hostcalls


@pytest.mark.parametrize("name, args", [("hello.wasm", ()), ("sleeper.wasm", ("1",))])
def test_an_unmetered_capi_run_reports_its_calls_by_name(name: str, args: tuple[str, ...]) -> None:
    # The native library served these calls without naming them: `usage.hostcalls` was
    # {} for every plain `stockade run` while the sandbox listed fd_write, poll_oneoff….
    from stockade.sandbox.capi import CapiSandbox

    policy = Policy.from_profile("default")
    results = {}
    for backend in (Sandbox, CapiSandbox):
        with backend(policy) as sandbox:
            results[backend] = sandbox.run(guest(name), Invocation(args=args, stdin=b"x\n"))
    assert results[CapiSandbox].ok, results[CapiSandbox].message
    assert results[CapiSandbox].usage.hostcalls == results[Sandbox].usage.hostcalls != {}


def test_a_directory_listing_is_the_same_on_both_backends(fast: Fast, tmp_path: Path) -> None:
    def setup(where: Path) -> None:
        for index in range(500):
            (where / f"f{index}").touch()

    result = same(both(fast, tmp_path, readable(), "readdir_list.wasm", "/data", setup=setup))
    assert result.stdout.endswith(b"count 502\n")

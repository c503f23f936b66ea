"""Quotas, file types and escapes are decided on real descriptors, not remembered paths.

Each test runs `guests/attacks/fs_tricks.c`, a hostile guest, under a real sandbox.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest

# WASI errno numbers as wasi-libc reports them.
EACCES, EBADF, EPERM = 2, 8, 63
MiB, TiB = 1024**2, 1024**4


def run(policy: Policy, *args: str) -> Result:
    return Sandbox(policy).run(guest("attacks/fs_tricks.wasm"), Invocation(args=args))


def writable(out: Path, **limits: object) -> Policy:
    return Policy().with_limits(**limits).with_capabilities(
        dirs=(DirGrant(out, "/out", writable=True),))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def entries(root: Path) -> tuple[int, int]:
    """(files, directories) under root, symlinks counted as files."""
    files = dirs = 0
    for _, dirnames, filenames in os.walk(root):
        files += len(filenames)
        dirs += len(dirnames)
    return files, dirs


def test_renamed_directory_cannot_dodge_the_file_quota(out: Path) -> None:
    result = run(writable(out, max_files=10), "stale", "/out", "5000")
    assert (result.outcome, result.exit_code) == (Outcome.FILE_QUOTA, 153), result.stdout
    files, dirs = entries(out)
    assert files + dirs <= 10
    assert result.usage.files_created == files + dirs


def test_fifo_renamed_into_a_renamed_directory_is_refused(out: Path) -> None:
    os.mkfifo(out / "fifo")
    results: list[Result] = []
    worker = threading.Thread(
        target=lambda: results.append(run(writable(out, timeout=5.0), "fifo", "/out")))
    worker.start()
    worker.join(30)
    if worker.is_alive():
        # The host call is blocked in open(): give the FIFO a writer so the run can end.
        os.close(os.open(out / "e" / "p", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail("open() of a FIFO blocked the host past the timeout")
    assert results[0].outcome is Outcome.EXITED, results[0].message
    assert results[0].stdout == f"fifo: open refused: errno {EACCES}\n".encode()


def test_paths_outside_the_preopen_are_no_existence_oracle(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    up = "/data/" + "../" * 64
    pairs = [(up + "etc/passwd", up + "etc/no-such-file-here"),
             (up + "dev/null", up + "dev/no-such-device"),
             ("/etc/passwd", "/no-such-file-here")]
    policy = Policy().with_capabilities(dirs=(DirGrant(data, "/data"),))
    result = run(policy, "probe", *(path for pair in pairs for path in pair))
    assert result.outcome is Outcome.EXITED, result.message
    answers = [line.split(" ", 2)[2] for line in result.stdout.decode().splitlines()]
    assert len(answers) == 2 * len(pairs)
    for index in range(len(pairs)):
        assert answers[2 * index] == answers[2 * index + 1], pairs[index]
        assert answers[2 * index] != "stat=0 open=0"


@pytest.mark.parametrize("args, errno", [(("create", "/data/new.txt"), EPERM),
                                         (("symlink", "visible.txt", "/data/link"), EPERM),
                                         (("grow", "truncate", "/data/visible.txt", "100"), EPERM),
                                         (("write", "/data/visible.txt"), EBADF)])
def test_read_only_preopen_answers_with_an_errno_under_strict(tmp_path: Path,
                                                              args: tuple[str, ...],
                                                              errno: int) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "visible.txt").write_text("yes")
    policy = Policy.from_profile("strict").with_capabilities(dirs=(DirGrant(data, "/data"),))
    result = run(policy, *args)
    assert (result.outcome, result.guest_exit_code) == (Outcome.EXITED, 1), result.message
    assert result.stdout.decode().endswith(f": errno {errno}\n")
    assert sorted(os.listdir(data)) == ["visible.txt"]
    assert (data / "visible.txt").read_text() == "yes"


@pytest.mark.parametrize("how", ["truncate", "seek", "pwrite", "allocate"])
def test_sparse_growth_is_charged_by_apparent_size(out: Path, how: str) -> None:
    result = run(writable(out, disk_quota=10 * MiB), "grow", how, "/out/big", str(TiB))
    assert (result.outcome, result.exit_code) == (Outcome.DISK_QUOTA, 153), result.stdout
    assert sum(path.stat().st_size for path in out.iterdir()) <= 10 * MiB


@pytest.mark.parametrize("how", ["truncate", "seek", "pwrite"])
def test_growth_within_the_quota_works_and_is_counted(out: Path, how: str) -> None:
    result = run(writable(out, disk_quota=10 * MiB), "grow", how, "/out/big", str(MiB))
    assert result.outcome is Outcome.EXITED and result.guest_exit_code == 0, result.stdout
    assert (out / "big").stat().st_size == MiB
    assert MiB <= result.usage.bytes_written <= MiB + 1


@pytest.mark.parametrize("target, link", [
    ("/etc/passwd", "/out/abs"),
    ("../secret.txt", "/out/up"),
    ("sub/../../secret.txt", "/out/dotdot"),
    ("../../secret.txt", "/out/sub/up2"),
    ("../x/../../secret.txt", "/out/sub/mixed"),
    # Inside the preopen where it is made, but a move of `sub` upward would take it out.
    ("../visible.txt", "/out/sub/up"),
    ("../sub/visible.txt", "/out/sub/sideways"),
])
def test_escaping_symlinks_are_refused(tmp_path: Path, out: Path, target: str,
                                       link: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    (out / "sub").mkdir()
    result = run(writable(out), "symlink", target, link)
    assert result.stdout == f"symlink {link}: errno {EPERM}\n".encode(), result.message
    assert entries(out) == (0, 1)


@pytest.mark.parametrize("target, link", [("visible.txt", "/out/same"),
                                          ("sub/visible.txt", "/out/down"),
                                          ("./sub/..x/visible.txt", "/out/dots")])
def test_symlinks_inside_the_preopen_are_made(out: Path, target: str, link: str) -> None:
    (out / "sub").mkdir()
    result = run(writable(out), "symlink", target, link)
    assert result.stdout == f"symlink {link}: ok\n".encode(), result.message
    assert os.readlink(out / link.removeprefix("/out/")) == target


@pytest.mark.parametrize("how", ["rename", "link"])
def test_a_climbing_symlink_cannot_be_moved_higher(out: Path, how: str) -> None:
    (out / "sub").mkdir()
    (out / "sub" / "up").symlink_to("../visible.txt")
    result = run(writable(out), how, "/out/sub/up", "/out/up")
    assert result.stdout == f"{how} /out/up: errno {EPERM}\n".encode(), result.message
    assert os.path.lexists(out / "sub" / "up") and not os.path.lexists(out / "up")


def test_a_climbing_symlink_may_move_sideways(out: Path) -> None:
    (out / "sub").mkdir()
    (out / "other").mkdir()
    (out / "sub" / "up").symlink_to("../visible.txt")
    result = run(writable(out), "rename", "/out/sub/up", "/out/other/up")
    assert result.stdout == b"rename /out/other/up: ok\n", result.message


def test_host_descriptors_are_released_after_each_run(out: Path) -> None:
    def held() -> int:
        return len(os.listdir("/proc/self/fd"))

    run(writable(out), "grow", "truncate", "/out/warm", "1")  # engine and caches made once
    before = held()
    for index in range(3):
        assert run(writable(out), "stale", "/out", "3").ok
        for name in ("d", "e"):
            os.rename(out / name, out / f"{name}{index}")
    assert held() == before


def test_preopens_opened_before_one_that_fails_are_closed(tmp_path: Path) -> None:
    """Out of descriptors halfway through a run's directories (EMFILE), those already
    opened were kept for good: each failed start leaked up to one per directory (found
    by review)."""
    from stockade.hostcalls.descriptors import Descriptors

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        Descriptors([(tmp_path / "a", True), (tmp_path / "b", False),
                     (tmp_path / "missing", True)])
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_process_that_cannot_list_its_descriptors_has_no_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing /proc/self/fd takes a descriptor: out of them, the listing raised EMFILE
    and the run ended `error` (found by review). No room: the run meets its quota."""
    import errno

    from stockade.hostcalls import fdroom

    class Run:
        fd_cap, fd_booked = 100, 0

        def fds_held(self) -> int:
            return 1

    def out_of_descriptors(path: str) -> list[str]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)

    room = fdroom.DescriptorRoom()
    monkeypatch.setattr(fdroom.os, "listdir", out_of_descriptors)
    assert room.book(Run(), 3) == 1  # what it holds, nothing more

"""The env/preopen probe sees only what was granted."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, PolicyError, Sandbox
from stockade.policy import DirGrant
from tests.conftest import guest


def probe(policy: Policy, *args: str) -> list[str]:
    result = Sandbox(policy).run(guest("probe.wasm"), Invocation(args=args))
    assert result.outcome is Outcome.EXITED, result.message
    return result.stdout.decode().splitlines()


def test_no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    assert not [line for line in probe(Policy()) if line.startswith("env ")]


def test_env_set_and_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    policy = Policy().with_capabilities(env=(("GREETING", "hi"),), env_allow=("LANG",))
    env = {line for line in probe(policy) if line.startswith("env ")}
    assert env == {"env GREETING=hi", "env LANG=C.UTF-8"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "visible.txt").write_text("yes")
    (tmp_path / "secret.txt").write_text("no")
    return data


def test_readonly_preopen(data_dir: Path) -> None:
    policy = Policy().with_capabilities(dirs=(DirGrant(data_dir, "/data"),))
    lines = probe(policy, "/data/visible.txt", "/data/../secret.txt", "/etc/passwd",
                  "--write", "/data/new.txt", "/data/visible.txt")
    assert lines[0] == "read /data/visible.txt ok"
    assert not lines[1].endswith(" ok")
    assert not lines[2].endswith(" ok")
    assert not lines[3].endswith(" ok") and not lines[4].endswith(" ok")
    assert not (data_dir / "new.txt").exists()
    assert (data_dir / "visible.txt").read_text() == "yes"


def test_writable_preopen(data_dir: Path) -> None:
    policy = Policy().with_capabilities(dirs=(DirGrant(data_dir, "/data", writable=True),))
    lines = probe(policy, "--write", "/data/new.txt", "/data/../escape.txt")
    assert lines == ["write /data/new.txt ok", lines[1]]
    assert not lines[1].endswith(" ok")
    assert (data_dir / "new.txt").read_text() == "x"
    assert not (data_dir.parent / "escape.txt").exists()


def test_symlink_out_of_preopen_is_not_followed(data_dir: Path) -> None:
    (data_dir / "link").symlink_to(data_dir.parent / "secret.txt")
    policy = Policy().with_capabilities(dirs=(DirGrant(data_dir, "/data"),))
    assert not probe(policy, "/data/link")[0].endswith(" ok")


def test_fifo_in_preopen_is_refused(data_dir: Path) -> None:
    import os

    os.mkfifo(data_dir / "pipe")
    policy = Policy().with_limits(timeout=5.0).with_capabilities(
        dirs=(DirGrant(data_dir, "/data"),))
    assert probe(policy, "/data/pipe") == ["read /data/pipe Permission denied"]


def test_missing_preopen_dir(tmp_path: Path) -> None:
    policy = Policy().with_capabilities(dirs=(DirGrant(tmp_path / "nope", "/x"),))
    with pytest.raises(PolicyError, match="not a directory"):
        Sandbox(policy).run(guest("hello.wasm"))


def test_scratch_dir_is_fresh_and_removed() -> None:
    policy = Policy().with_capabilities(scratch="/scratch")
    result = Sandbox(policy).run(guest("probe.wasm"),
                                 Invocation(args=("--write", "/scratch/a.txt")))
    assert result.stdout.decode().splitlines() == ["write /scratch/a.txt ok"]
    assert result.usage.files_created == 1
    assert result.scratch is None


def test_scratch_dir_kept_on_request() -> None:
    import shutil

    policy = Policy().with_capabilities(scratch="/scratch", keep_scratch=True)
    result = Sandbox(policy).run(guest("probe.wasm"),
                                 Invocation(args=("--write", "/scratch/a.txt")))
    assert result.scratch is not None
    assert (Path(result.scratch) / "a.txt").read_text() == "x"
    shutil.rmtree(result.scratch)


def test_unnameable_long_paths_do_not_break_host_calls(tmp_path: Path) -> None:
    policy = Policy().with_capabilities(dirs=(DirGrant(tmp_path, "/out", writable=True),))
    long_name = "/out/" + "d" * 250 + "/" + "e" * 250 + "/" + "f" * 4000
    lines = probe(policy, "--write", long_name)
    assert lines[0].startswith("write /out/ddd") and not lines[0].endswith(" ok")

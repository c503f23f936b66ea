"""A policy file another user could rewrite: one with `[trust] require_signature = true`
that anyone may write is one anyone may turn the trust off in. `stockade check` flagged
it; `stockade run --policy` used it. Refused when loaded, by the rule of the trust keys
(`regularfile.owner_problem`, root's files counting as the user's own), on the opened
file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.policy import load_policy
from tests.conftest import guest, refused, stockade

TRUSTING = '[trust]\nrequire_signature = true\nkeys = ["signer.pub"]\n'


def write(path: Path, mode: int = 0o644, text: str = TRUSTING) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620], ids=oct)
def test_a_policy_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    policy = write(tmp_path / "pol.toml", mode)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    message = caught.value.message
    assert message.startswith(f"{policy}: ") and "lets others replace" in message
    assert "\n" not in message and PolicyError.exit_code == 125


def test_the_file_a_link_names_is_the_one_checked(tmp_path: Path) -> None:
    """A symlink's own mode (0777) is no file's; its target's is."""
    link = tmp_path / "link.toml"
    link.symlink_to(write(tmp_path / "pol.toml"))
    assert load_policy(link).trust.require_signature
    (tmp_path / "pol.toml").chmod(0o666)
    with pytest.raises(PolicyError, match="lets others replace"):
        load_policy(link)


def test_a_policy_written_as_the_tests_write_files_loads(tmp_path: Path) -> None:
    policy = tmp_path / "pol.toml"
    policy.write_text(TRUSTING)  # umask 022: 0644
    assert load_policy(policy).trust.require_signature


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
def test_a_policy_another_user_owns_is_refused(tmp_path: Path) -> None:
    policy = write(tmp_path / "pol.toml")
    os.chown(policy, 54321, 54321)
    with pytest.raises(PolicyError, match="owned by uid 54321"):
        load_policy(policy)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned file needs root to write")
def test_a_policy_root_owns_is_the_users_own(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Root can replace any file anyway: /etc/stockade's policies are used by everyone."""
    policy = write(tmp_path / "pol.toml")
    monkeypatch.setattr(os, "geteuid", lambda: 54321)
    assert load_policy(policy).trust.require_signature


def test_the_check_is_of_the_file_opened(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a `stat` of the path before or after it was read: what was read is judged."""
    policy = write(tmp_path / "pol.toml", 0o666)

    def refuse(*_: object, **__: object) -> os.stat_result:
        raise AssertionError("the path was stat()ed")

    with monkeypatch.context() as patched, pytest.raises(PolicyError) as caught:
        patched.setattr(os, "stat", refuse)
        patched.setattr(os, "lstat", refuse)
        load_policy(policy)
    assert "lets others replace" in caught.value.message


def test_run_and_check_refuse_it_alike(tmp_path: Path) -> None:
    """`check` said FAIL and `run --policy` ran with it: both refuse it now, exit 125."""
    policy = write(tmp_path / "pol.toml", 0o666,
                   '[limits]\ntimeout = "5s"\n')
    run = refused(stockade("run", "--policy", str(policy), str(guest("hello.wasm"))),
                  str(policy), "lets others replace")
    check = refused(stockade("check", "--no-host", "--policy", str(policy)), str(policy))
    assert run == check
    policy.chmod(0o644)
    assert stockade("run", "--policy", str(policy), str(guest("hello.wasm"))).returncode == 0
